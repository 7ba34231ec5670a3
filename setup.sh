#!/usr/bin/env bash
# Set up shufflenet-pl on a Debian/Ubuntu machine: system libraries, a virtual environment in .venv,
# PyTorch and the project. Idempotent: a second run only checks.
#   bash setup.sh          # what training needs
#   bash setup.sh --dev    # plus what the test suite needs (pytest, ONNX, a local SLURM)
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev or --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------------
APT_PACKAGES=()
if [ "$DEV" = 1 ]; then
  APT_PACKAGES+=()
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup.sh: please install these system packages with your package manager: ${missing[*]}" >&2
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
want="$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)-dev$DEV"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "environment up to date ($VENV)"
  exit 0
fi
"${PIP[@]}" install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  say "installing torch ${TORCH_VERSION:=2.14.1} and torchvision ${TORCHVISION_VERSION:=0.29.1}"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
extras=""; [ "$DEV" = 1 ] && extras="[dev]"
say "installing shufflenet-pl$extras"
"${PIP[@]}" install -q -e ".$extras"
echo "$want" > "$stamp"
say "done: activate with 'source $VENV/bin/activate', then 'shufflenet-pl --help'"
