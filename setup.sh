#!/usr/bin/env bash
# Set up shufflenet-pl on a Debian/Ubuntu machine: system libraries, a virtual environment in .venv,
# PyTorch and the project. Idempotent: a second run only checks.
#   bash setup.sh          # what training needs
#   bash setup.sh --dev    # plus what the test suite needs (pytest, ONNX, a local SLURM)
#   bash setup.sh --no-ffcv  # skip FFCV (and its C build); use the ImageFolder datamodule then
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
FFCV=1
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --no-ffcv) FFCV=0 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --no-ffcv or --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------------
APT_PACKAGES=()
# FFCV's C extension (libffcv) is compiled at install time against libjpeg-turbo and OpenCV (it uses only
# cv::Mat and cv::resize, so OpenCV core + imgproc suffice: 14 packages instead of libopencv-dev's 200+).
# ffcv's Python side imports cv2 from the opencv-python wheel, which loads libGL and libglib at import.
# Our decode stage compiles a small C kernel against libjpeg's own API (partial decode): gcc, libjpeg-dev.
FFCV_APT_PACKAGES=(gcc g++ pkg-config libturbojpeg0-dev libjpeg-dev libopencv-core-dev libopencv-imgproc-dev libgl1 libglib2.0-0)
[ "$FFCV" = 1 ] && APT_PACKAGES+=("${FFCV_APT_PACKAGES[@]}")
if [ "$DEV" = 1 ]; then
  # A real SLURM for the cluster tests (cluster/local/start.sh starts it on localhost).
  APT_PACKAGES+=(slurmctld slurmd slurm-client munge)
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup.sh: please install these system packages with your package manager: ${missing[*]}" >&2
    [ "$FFCV" = 1 ] && echo "setup.sh: FFCV needs a C++ compiler, pkg-config, libjpeg-turbo (turbojpeg.h, jpeglib.h and their libraries)" \
      "and OpenCV core + imgproc headers; or run 'bash setup.sh --no-ffcv' and use the ImageFolder datamodule" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- python environment ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$VENV/.shufflenet-pl-setup"
want="$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)-dev$DEV-ffcv$FFCV"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "environment up to date ($VENV)"
  exit 0
fi
"${PIP[@]}" install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  say "installing torch ${TORCH_VERSION:=2.14.1} and torchvision ${TORCHVISION_VERSION:=0.29.1}"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
extra_names=()
[ "$FFCV" = 1 ] && extra_names+=(ffcv)
[ "$DEV" = 1 ] && extra_names+=(dev)
extras=""; [ ${#extra_names[@]} -gt 0 ] && extras="[$(IFS=,; echo "${extra_names[*]}")]"
if [ "$FFCV" = 1 ]; then
  # ffcv's setup.py asks pkg-config for 'opencv4' and includes <opencv2/opencv.hpp>, which in Debian's
  # packages needs every OpenCV module. Without libopencv-dev, point it at a shim that covers exactly
  # what libffcv uses (core + imgproc); the headers and libraries are Debian's own.
  if ! pkg-config --exists opencv4; then
    shim="$(cd "$VENV" && pwd)/ffcv-build"
    mkdir -p "$shim/include/opencv2"
    printf '%s\n' "Name: opencv4" "Description: OpenCV core + imgproc (all that libffcv uses)" \
      "Version: 4" \
      "Libs: -lopencv_imgproc -lopencv_core" "Cflags: -I$shim/include -I/usr/include/opencv4" > "$shim/opencv4.pc"
    printf '%s\n' "#include <opencv2/core.hpp>" "#include <opencv2/imgproc.hpp>" > "$shim/include/opencv2/opencv.hpp"
    export PKG_CONFIG_PATH="$shim${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  fi
  for lib in opencv4 libturbojpeg; do
    pkg-config --exists "$lib" || { echo "setup.sh: pkg-config cannot find $lib, which FFCV's build needs;" \
      "install libturbojpeg0-dev and libopencv-core-dev + libopencv-imgproc-dev (Debian/Ubuntu names)," \
      "or run 'bash setup.sh --no-ffcv' and use the ImageFolder datamodule" >&2; exit 1; }
  done
fi
say "installing shufflenet-pl$extras"
"${PIP[@]}" install -q -e ".$extras"
if [ "$FFCV" = 1 ]; then
  # Fail here, not at the first epoch: the extension must load and decode a JPEG.
  "$VENV/bin/python" -m shufflenet_pl.data.ffcv_check || {
    echo "setup.sh: ffcv installed but does not run (see above); 'bash setup.sh --no-ffcv' skips it" >&2; exit 1; }
fi
echo "$want" > "$stamp"
say "done: activate with 'source $VENV/bin/activate', then 'shufflenet-pl --help'"
