#!/usr/bin/env bash
# Set up shufflenet-pl: the system libraries FFCV needs, a virtual environment in .venv ($VENV), PyTorch
# and the project. Idempotent: a second run only checks. No root needed where the libraries are present.
#   bash setup.sh                     # what training needs
#   bash setup.sh --dev               # plus what the test suite needs (pytest, ONNX, a local SLURM)
#   bash setup.sh --no-ffcv           # skip FFCV (and its C build); use the ImageFolder datamodule then
#   bash setup.sh --check             # only say which libraries are found or missing (exit 0 / 1)
#   bash setup.sh --torch-cuda 12.8   # PyTorch's build for CUDA 12.6, 12.8, 13.0 or cpu (default: PyPI's)
set -euo pipefail

TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
TORCH_INDEX=https://download.pytorch.org/whl

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { echo "setup.sh: $*" >&2; exit 1; }

# --- finding libraries by what they provide ------------------------------------------------------
# Each requirement: what it is, how it is probed, and its package names for apt, dnf and conda-forge.
# FFCV's C extension (libffcv) is compiled at install time against libjpeg-turbo's TurboJPEG API and
# OpenCV (only cv::Mat and cv::resize: core + imgproc); ffcv's Python side imports cv2 from the
# opencv-python wheel, which loads libGL and libglib; our decode stage compiles a small C kernel
# against libjpeg's own API (partial decode).
FFCV_REQUIREMENTS=(cc cxx pkgconfig libjpeg turbojpeg opencv glruntime)
declare -A WHAT=(
  [cc]="a C compiler (\$CC or cc)"
  [cxx]="a C++ compiler (\$CXX or c++)"
  [pkgconfig]="pkg-config (ffcv's build asks it for opencv4 and libturbojpeg)"
  [libjpeg]="libjpeg-turbo's libjpeg API (jpeglib.h with jpeg_crop_scanline and jpeg_skip_scanlines, -ljpeg)"
  [turbojpeg]="libjpeg-turbo's TurboJPEG API (turbojpeg.h with tjInitDecompress, -lturbojpeg)"
  [opencv]="OpenCV core + imgproc (opencv2/core.hpp, opencv2/imgproc.hpp with cv::resize)"
  [glruntime]="libGL.so.1 and libglib-2.0.so.0 (loaded by the opencv-python wheel)"
  [slurm]="SLURM and munge (slurmctld, slurmd, sinfo, munged: the local-SLURM tests)"
)
declare -A APT=(
  [cc]=gcc [cxx]=g++ [pkgconfig]=pkg-config [libjpeg]=libjpeg-dev [turbojpeg]=libturbojpeg0-dev
  [opencv]="libopencv-core-dev libopencv-imgproc-dev" [glruntime]="libgl1 libglib2.0-0"
  [slurm]="slurmctld slurmd slurm-client munge"
)
declare -A DNF=(
  [cc]=gcc [cxx]=gcc-c++ [pkgconfig]=pkgconf-pkg-config [libjpeg]=libjpeg-turbo-devel [turbojpeg]=turbojpeg-devel
  [opencv]=opencv-devel [glruntime]="mesa-libGL glib2" [slurm]="slurm slurm-slurmctld slurm-slurmd munge"
)
declare -A CONDA=(
  [cc]=c-compiler [cxx]=cxx-compiler [pkgconfig]=pkg-config [libjpeg]=libjpeg-turbo [turbojpeg]=libjpeg-turbo
  [opencv]=opencv [glruntime]="libgl libglib" [slurm]=""
)

# An active conda environment provides headers, libraries and .pc files under its prefix; the rpath
# lets what is built against them (libffcv, the box kernel) find them on a compute node without
# LD_LIBRARY_PATH.
use_conda_prefix() {
  [ -n "${CONDA_PREFIX:-}" ] && [ -d "$CONDA_PREFIX" ] || return 0
  export PKG_CONFIG_PATH="$CONDA_PREFIX/lib/pkgconfig:$CONDA_PREFIX/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CPATH="$CONDA_PREFIX/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$CONDA_PREFIX/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$CONDA_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# -L and an rpath for every folder of LIBRARY_PATH (a module's or conda's libraries), in its order: GCC
# searches LIBRARY_PATH only after its own folders, so a system copy of a library (another version, or
# none of the API) would otherwise be linked instead; the rpath lets the builds run where the variable
# is not set.
library_ldflags() {
  local dir flags=""
  local IFS=:
  for dir in ${LIBRARY_PATH:-}; do
    [ -n "$dir" ] && flags="$flags -L$dir -Wl,-rpath,$dir"
  done
  printf '%s' "${flags# }${LDFLAGS:+ $LDFLAGS}"
}

# pkg-config's flags for a module, or nothing (status 1) where pkg-config does not know it.
pc_flags() {
  command -v pkg-config >/dev/null && pkg-config --exists "$1" 2>/dev/null && pkg-config --cflags --libs "$1"
}

# probe LANG FLAGS SOURCE: compile SOURCE (language c or c++), link it with FLAGS and run it, as FFCV's
# and the kernel's builds would (CPATH, LIBRARY_PATH, LDFLAGS and, at run time, LD_LIBRARY_PATH count).
probe() {
  local lang=$1 flags=$2 source=$3 dir compiler status=0
  if [ "$lang" = c ]; then compiler=${CC:-cc}; else compiler=${CXX:-c++}; fi
  dir=$(mktemp -d)
  printf '%s\n' "$source" > "$dir/probe.src"
  # shellcheck disable=SC2086  # CC, CXX and the flags are word lists by convention
  $compiler -x "$lang" "$dir/probe.src" -x none -o "$dir/probe" $flags ${LDFLAGS:-} >"$dir/log" 2>&1 \
    && "$dir/probe" >>"$dir/log" 2>&1 || status=1
  [ -n "${SETUP_PROBE_LOG:-}" ] && cat "$dir/log" >> "$SETUP_PROBE_LOG"
  rm -rf "$dir"
  return $status
}

# The folder with opencv2/core.hpp for a build without opencv4.pc (Debian's core + imgproc packages).
opencv_include_dir() {
  local dir
  local IFS=:
  for dir in ${CPATH:-} /usr/local/include /usr/include; do  # CPATH holds an active conda prefix
    for candidate in "$dir/opencv4" "$dir"; do
      [ -f "$candidate/opencv2/core.hpp" ] && { printf '%s' "$candidate"; return 0; }
    done
  done
  return 1
}

found() {
  case "$1" in
    cc) probe c "" 'int main(void) { return 0; }' ;;
    cxx) probe c++ "" 'int main() { return 0; }' ;;
    pkgconfig) command -v pkg-config >/dev/null ;;
    libjpeg) probe c "$(pc_flags libjpeg || echo -ljpeg)" '#include <stdio.h>
#include <jpeglib.h>
int main(void) {
  struct jpeg_decompress_struct cinfo; struct jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err); jpeg_create_decompress(&cinfo);
  void *crop = (void *)jpeg_crop_scanline, *skip = (void *)jpeg_skip_scanlines;
  jpeg_destroy_decompress(&cinfo);
  return crop && skip ? 0 : 1;
}' ;;
    turbojpeg) probe c "$(pc_flags libturbojpeg || echo -lturbojpeg)" '#include <turbojpeg.h>
int main(void) {
  tjhandle handle = tjInitDecompress();
  void *transform = (void *)tjInitTransform;
  return handle && transform && tjDestroy(handle) == 0 ? 0 : 1;
}' ;;
    opencv)
      local flags
      flags=$(pc_flags opencv4) || { flags="-I$(opencv_include_dir) -lopencv_imgproc -lopencv_core" || return 1; }
      probe c++ "$flags" '#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
int main() {
  cv::Mat image(4, 4, CV_8UC3, cv::Scalar(1, 2, 3)), small;
  cv::resize(image, small, cv::Size(2, 2));
  return small.cols == 2 ? 0 : 1;
}' ;;
    glruntime) probe c "-ldl" '#include <dlfcn.h>
int main(void) { return dlopen("libGL.so.1", RTLD_LAZY) && dlopen("libglib-2.0.so.0", RTLD_LAZY) ? 0 : 1; }' ;;
    slurm)
      local name
      for name in slurmctld slurmd sinfo munged; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$name" >/dev/null || return 1
      done ;;
  esac
}

# Every requirement in "$@" that is not found, one per line.
missing_of() {
  local id
  for id in "$@"; do found "$id" || echo "$id"; done
}

# The one message for what is missing: what each is, and the packages that provide it.
explain_missing() {
  local id apt=() dnf=() conda=() what=()
  for id in "$@"; do
    what+=("${WHAT[$id]}")
    read -ra names <<< "${APT[$id]}"; apt+=("${names[@]}")
    read -ra names <<< "${DNF[$id]}"; dnf+=("${names[@]}")
    read -ra names <<< "${CONDA[$id]}"; [ ${#names[@]} -gt 0 ] && conda+=("${names[@]}")
  done
  local conda_line="none needed for this"
  [ ${#conda[@]} -gt 0 ] && conda_line="conda install -c conda-forge $(printf '%s\n' "${conda[@]}" | sort -u | xargs)"
  {
    echo "setup.sh: not found: $(IFS=';'; echo "${what[*]}" | sed 's/;/; /g')."
    echo "  Install with one of:"
    echo "    apt (Debian/Ubuntu):   apt-get install ${apt[*]}"
    echo "    dnf (RHEL/Rocky/Alma): dnf install ${dnf[*]}"
    echo "    conda-forge:           $conda_line (or: conda env create -f environment.yml)"
    echo "  Libraries in a prefix of your own (a module, 'dpkg -x', a build): set PKG_CONFIG_PATH, CPATH,"
    echo "  LIBRARY_PATH and LD_LIBRARY_PATH to it. Then run 'bash setup.sh' again; or run"
    echo "  'bash setup.sh --no-ffcv' and use the ImageFolder datamodule."
  } >&2
}

# apt only on Debian (dpkg-query and apt-get exist) and for root, or a user whom sudo lets install.
apt_prefix() {
  command -v dpkg-query >/dev/null && command -v apt-get >/dev/null || return 1
  if [ "$(id -u)" = 0 ]; then echo ""; return 0; fi
  command -v sudo >/dev/null || return 1
  if sudo -n true 2>/dev/null || { [ -t 0 ] && sudo -v; }; then echo sudo; return 0; fi
  return 1
}

# --- PyTorch's build for the site's driver -------------------------------------------------------
# --torch-cuda VERSION: the pinned torch from PyTorch's own index for that CUDA (pytorch.org's
# "previous versions" page gives these index URLs). Sets TORCH_PIP (pip's arguments).
torch_pip_args() {
  local cuda=$1 tag
  case "$cuda" in
    "") TORCH_PIP=("torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"); return 0 ;;
    12.6|12.8|13.0) tag="cu${cuda/./}" ;;
    cpu) tag=cpu ;;
    *) echo "setup.sh: --torch-cuda $cuda: use 12.6, 12.8, 13.0 or cpu (nvidia-smi shows the driver's CUDA version)" >&2
       exit 2 ;;
  esac
  TORCH_PIP=("torch==$TORCH_VERSION+$tag" "torchvision==$TORCHVISION_VERSION+$tag" --index-url "$TORCH_INDEX/$tag")
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")"
  local dev=0 ffcv=1 check=0 torch_cuda=${TORCH_CUDA:-}
  while [ $# -gt 0 ]; do
    case "$1" in
      --dev) dev=1 ;;
      --no-ffcv) ffcv=0 ;;
      --check) check=1 ;;
      --torch-cuda) [ $# -ge 2 ] || fail "--torch-cuda needs a version: 12.6, 12.8, 13.0 or cpu"; torch_cuda=$2; shift ;;
      --torch-cuda=*) torch_cuda=${1#*=} ;;
      -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
      *) echo "setup.sh: unknown option $1 (use --dev, --no-ffcv, --check, --torch-cuda or --help)" >&2; exit 2 ;;
    esac
    shift
  done
  torch_pip_args "$torch_cuda"
  local python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null || python=python3
  local venv=${VENV:-.venv}

  # --- system libraries --------------------------------------------------------------------------
  use_conda_prefix
  LDFLAGS=$(library_ldflags); export LDFLAGS
  local wanted=() missing=() id
  [ "$ffcv" = 1 ] && wanted+=("${FFCV_REQUIREMENTS[@]}")
  [ "$dev" = 1 ] && wanted+=(slurm)
  mapfile -t missing < <(missing_of "${wanted[@]}")
  if [ "$check" = 1 ]; then
    for id in "${wanted[@]}"; do
      if printf '%s\n' "${missing[@]}" | grep -qx "$id"; then say "missing: ${WHAT[$id]}"; else say "found: ${WHAT[$id]}"; fi
    done
    say "torch: pip install ${TORCH_PIP[*]}"
    [ ${#missing[@]} -eq 0 ] || { explain_missing "${missing[@]}"; exit 1; }
    exit 0
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo packages=()
    if sudo=$(apt_prefix); then
      for id in "${missing[@]}"; do read -ra names <<< "${APT[$id]}"; packages+=("${names[@]}"); done
      say "apt-get install ${packages[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
      mapfile -t missing < <(missing_of "${missing[@]}")
    fi
    if [ ${#missing[@]} -eq 1 ] && [ "${missing[0]}" = slurm ]; then
      say "SLURM is not installed here (needs root on Debian); the local-SLURM tests skip"
    elif [ ${#missing[@]} -gt 0 ]; then
      explain_missing "${missing[@]}"
      exit 1
    fi
  fi

  # --- python environment ------------------------------------------------------------------------
  if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $($python --version)"
    "$python" -m venv "$venv"
  fi
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  local stamp="$venv/.shufflenet-pl-setup"
  local want
  want="$(cat pyproject.toml setup.sh shufflenet_pl/data/jpeg_box.c | sha256sum | cut -c1-16)-dev$dev-ffcv$ffcv-torch${torch_cuda:-pypi}"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "environment up to date ($venv)"
    exit 0
  fi
  "${pip[@]}" install -q --upgrade pip
  local installed=""
  installed=$("$venv/bin/python" -c "import torch, torchvision; print(torch.__version__)" 2>/dev/null) || true
  if [ -z "$installed" ] || { [ -n "$torch_cuda" ] && [ "$installed" != "${TORCH_PIP[0]#torch==}" ]; }; then
    say "installing ${TORCH_PIP[*]}"
    "${pip[@]}" install -q "${TORCH_PIP[@]}"
  fi
  local extra_names=() extras=""
  [ "$ffcv" = 1 ] && extra_names+=(ffcv)
  [ "$dev" = 1 ] && extra_names+=(dev)
  [ ${#extra_names[@]} -gt 0 ] && extras="[$(IFS=,; echo "${extra_names[*]}")]"
  if [ "$ffcv" = 1 ]; then
    # ffcv's setup.py asks pkg-config for 'opencv4' and 'libturbojpeg' and includes <opencv2/opencv.hpp>,
    # which in Debian's packages needs every OpenCV module. Where pkg-config lacks them (Debian's core +
    # imgproc packages, a module without .pc files), point it at a shim that covers exactly what libffcv
    # uses; the headers and libraries are the ones the probes found.
    local shim
    shim="$(cd "$venv" && pwd)/ffcv-build"
    mkdir -p "$shim/include/opencv2"
    if ! pkg-config --exists opencv4; then
      printf '%s\n' "Name: opencv4" "Description: OpenCV core + imgproc (all that libffcv uses)" "Version: 4" \
        "Libs: -lopencv_imgproc -lopencv_core" "Cflags: -I$shim/include -I$(opencv_include_dir)" > "$shim/opencv4.pc"
      printf '%s\n' "#include <opencv2/core.hpp>" "#include <opencv2/imgproc.hpp>" > "$shim/include/opencv2/opencv.hpp"
    fi
    if ! pkg-config --exists libturbojpeg; then
      printf '%s\n' "Name: libturbojpeg" "Description: TurboJPEG (found by the compiler)" "Version: 2" \
        "Libs: -lturbojpeg" "Cflags:" > "$shim/libturbojpeg.pc"
    fi
    export PKG_CONFIG_PATH="$shim${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  fi
  say "installing shufflenet-pl$extras"
  "${pip[@]}" install -q -e ".$extras"
  if [ "$ffcv" = 1 ]; then
    # Built here, once, for this processor family: compute nodes without a compiler load this copy.
    "$venv/bin/python" -m shufflenet_pl.data.jpeg_box
    # Fail here, not at the first epoch: the extension must load and decode a JPEG.
    "$venv/bin/python" -m shufflenet_pl.data.ffcv_check || {
      echo "setup.sh: ffcv installed but does not run (see above); 'bash setup.sh --no-ffcv' skips it" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
  say "done: activate with 'source $venv/bin/activate', then 'shufflenet-pl --help'"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
