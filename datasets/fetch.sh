#!/usr/bin/env bash
# Downloads the official files of one data set into datasets/<name>/ (next to this script),
# where softlab looks for them. For users with network access; the tests never run it.
#
#   datasets/fetch.sh mnist|fashion-mnist|cifar10|cifar100 [DEST_DIR]
#
# Every file is checked against the MD5 its publishers give (the same sums torchvision
# uses); a file that is already present and correct is not downloaded again.
set -euo pipefail

usage() {
  echo "usage: $0 mnist|fashion-mnist|cifar10|cifar100 [DEST_DIR]" >&2
  echo "  DEST_DIR defaults to $(dirname "$0")/<name>" >&2
  exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
name=$1
case $name in
  mnist | fashion-mnist | cifar10 | cifar100) ;;
  *) echo "error: unknown data set '$name'" >&2; usage ;;
esac
dest=${2:-"$(cd "$(dirname "$0")" && pwd)/$name"}

download() {  # URL OUT
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 --connect-timeout 30 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --show-progress --tries=3 -O "$2" "$1"
  else
    echo "error: neither curl nor wget is installed" >&2
    exit 1
  fi
}

md5_ok() {  # FILE MD5
  [[ -f $1 ]] || return 1
  if ! command -v md5sum >/dev/null 2>&1; then
    echo "warning: md5sum not found, $1 is not verified" >&2
    return 0
  fi
  [[ $(md5sum "$1" | cut -d' ' -f1) == "$2" ]]
}

fetch() {  # URL FILE MD5: download into $dest/FILE through a .part file, then verify
  local out="$dest/$2"
  if md5_ok "$out" "$3"; then
    echo "$2: present and verified"
    return
  fi
  echo "downloading $1"
  download "$1" "$out.part"
  if ! md5_ok "$out.part" "$3"; then
    rm -f "$out.part"
    echo "error: $2 from $1 does not have the expected MD5 $3" >&2
    exit 1
  fi
  mv "$out.part" "$out"
}

mkdir -p "$dest"
case $name in
  mnist)
    base=https://ossci-datasets.s3.amazonaws.com/mnist
    fetch $base/train-images-idx3-ubyte.gz train-images-idx3-ubyte.gz f68b3c2dcbeaaa9fbdd348bbdeb94873
    fetch $base/train-labels-idx1-ubyte.gz train-labels-idx1-ubyte.gz d53e105ee54ea40749a09fcbcd1e9432
    fetch $base/t10k-images-idx3-ubyte.gz t10k-images-idx3-ubyte.gz 9fb629c4189551a2d022fa330f9573f3
    fetch $base/t10k-labels-idx1-ubyte.gz t10k-labels-idx1-ubyte.gz ec29112dd5afa0611ce80d1b7f02629c
    ;;
  fashion-mnist)
    base=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
    fetch $base/train-images-idx3-ubyte.gz train-images-idx3-ubyte.gz 8d4fb7e6c68d591d4c3dfef9ec88bf0d
    fetch $base/train-labels-idx1-ubyte.gz train-labels-idx1-ubyte.gz 25c81989df183df01b3e8a0aad5dffbe
    fetch $base/t10k-images-idx3-ubyte.gz t10k-images-idx3-ubyte.gz bef4ecab320f06d8554ea6380940ec79
    fetch $base/t10k-labels-idx1-ubyte.gz t10k-labels-idx1-ubyte.gz bb300cfdad3c16e7a12a480ee83cd310
    ;;
  cifar10)
    # Unpacks to $dest/cifar-10-batches-bin/, which softlab accepts as it is.
    fetch https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz cifar-10-binary.tar.gz c32a1d4ab5d03f1284b67883e8d87530
    tar -xzf "$dest/cifar-10-binary.tar.gz" -C "$dest"
    rm -f "$dest/cifar-10-binary.tar.gz"
    ;;
  cifar100)
    # Unpacks to $dest/cifar-100-binary/ (train.bin, test.bin, fine_label_names.txt, ...).
    fetch https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz cifar-100-binary.tar.gz 03b5dce01913d631647c71ecec9e9cb8
    tar -xzf "$dest/cifar-100-binary.tar.gz" -C "$dest"
    rm -f "$dest/cifar-100-binary.tar.gz"
    ;;
esac
echo "$name is in $dest"
