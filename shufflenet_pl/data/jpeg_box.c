/* Decode one box of a JPEG, and only what the box needs, with libjpeg(-turbo)'s partial decode.
 *
 * Rows of the DCT-scaled image [r0, r0 + rows) are decoded: the rows above are skipped with
 * jpeg_skip_scanlines (entropy-decoded only, no IDCT, upsampling or colour conversion), the columns are
 * cropped with jpeg_crop_scanline to whole iMCUs around [c0, c0 + cols), and the rows below are never
 * read. RGB rows of xw pixels land contiguously at `out`; x0_xw receives the first decoded column x0
 * (<= c0) and the decoded width xw. Returns 0; 1 when libjpeg decoded the rows but warned (corrupt
 * entropy-coded data: a bad Huffman code, a premature marker), the pixels then partly garbage; or a
 * negative number on a libjpeg error (-1), a short image (-2) or too small an output buffer (-3).
 * Built and loaded by shufflenet_pl/data/jpeg_box.py.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jpeglib.h>

struct error_manager {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
};

static void on_error(j_common_ptr cinfo) { longjmp(((struct error_manager *)cinfo->err)->jump, 1); }
/* Not printed: warnings are counted in err.pub.num_warnings and returned as status 1. */
static void on_message(j_common_ptr cinfo) { (void)cinfo; }

/* One decompressor per thread, reused image after image (creating one allocates its memory pools). */
static __thread struct jpeg_decompress_struct cinfo;
static __thread struct error_manager err;
static __thread int ready = 0;

int64_t shufflenet_pl_jpeg_box(const uint8_t *src, uint64_t size, int64_t scale_num, int64_t r0, int64_t rows,
                               int64_t c0, int64_t cols, uint8_t *out, int64_t out_capacity, int64_t *x0_xw) {
  int64_t status = 0;
  if (!ready) {
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.output_message = on_message;
    jpeg_create_decompress(&cinfo);
    ready = 1;
  }
  if (setjmp(err.jump)) {
    jpeg_abort_decompress(&cinfo);  /* back to the start state, ready for the next image */
    return -1;
  }
  err.pub.num_warnings = 0;
  jpeg_mem_src(&cinfo, src, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  cinfo.scale_num = (unsigned int)scale_num;
  cinfo.scale_denom = 8;
  cinfo.dct_method = JDCT_IFAST;  /* FFCV's imdecode decodes with TJFLAG_FASTDCT: the same pixels */
  jpeg_start_decompress(&cinfo);
  JDIMENSION x0 = (JDIMENSION)c0, xw = (JDIMENSION)cols;
  if (c0 > 0 || (JDIMENSION)cols < cinfo.output_width) {
    jpeg_crop_scanline(&cinfo, &x0, &xw);
  } else {
    x0 = 0;
    xw = cinfo.output_width;
  }
  x0_xw[0] = x0;
  x0_xw[1] = xw;
  if ((int64_t)xw * 3 * rows > out_capacity) {
    status = -3;
  } else {
    if (r0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)r0);
    /* Several rows per call: libjpeg produces an iMCU row (up to 16 rows) at a time. */
    JSAMPROW rows_out[16];
    int64_t done = 0;
    while (done < rows) {
      int64_t want = rows - done < 16 ? rows - done : 16;
      for (int64_t i = 0; i < want; i++) rows_out[i] = out + (done + i) * (int64_t)xw * 3;
      JDIMENSION got = jpeg_read_scanlines(&cinfo, rows_out, (JDIMENSION)want);
      if (got == 0) {
        status = -2;
        break;
      }
      done += got;
    }
  }
  if (status == 0 && err.pub.num_warnings > 0) status = 1;
  jpeg_abort_decompress(&cinfo);  /* the rows below the box are never decoded */
  return status;
}
