#!/usr/bin/env bash
# Installs what softlab needs to build, test and train, from Debian's packages only.
# Idempotent and fast when everything is present: apt-get runs only for missing packages.
#   tools/setup.sh          what the GCC build, the tests and training need
#   tools/setup.sh --fuzz   also clang, libFuzzer and LLVM's OpenMP runtime (tools/fuzz.sh)
set -euo pipefail

fuzz=0
case "${1:-}" in
  "") ;;
  --fuzz) fuzz=1 ;;
  *) echo "setup: unknown option '$1' (expected nothing or --fuzz)" >&2; exit 2 ;;
esac

packages=(
  g++ make cmake
  # ocl-icd-opencl-dev: libdnnl-dev only recommends it, but its CMake config
  # (find_package(dnnl)) fails without the OpenCL headers.
  libeigen3-dev libdnnl-dev ocl-icd-opencl-dev libcxxopts-dev nlohmann-json3-dev zlib1g-dev
  libgtest-dev libbenchmark-dev
  # Open MPI: data-parallel training and distributed sweeps (docs/distributed.md).
  libopenmpi-dev openmpi-bin
  dataset-fashion-mnist
)
if [ $fuzz -eq 1 ]; then
  # libomp-14-dev: clang's -fopenmp links LLVM's OpenMP runtime, not GCC's libgomp.
  packages+=(clang libfuzzer-14-dev libomp-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
