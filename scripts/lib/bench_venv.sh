# Sourced by the benchmark scripts that compare against datatrove: sets VENV to a throwaway venv
# ($LEHR_CACHE/bench-venv, default ~/.cache/lehr) holding datatrove 0.10.1 and what the
# comparisons use, installing what is missing. One package list for every script, so that they
# share the venv without reinstalling each other's packages.
# datatrove 0.10.1 hashes str with xxhash.xxh64_intdigest, which xxhash 4 refuses: pin xxhash<4.
LEHR_CACHE=${LEHR_CACHE:-$HOME/.cache/lehr}
VENV=$LEHR_CACHE/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c \
  'import datatrove, spacy, pyarrow, orjson, zstandard, tokenizers, fasttext, xxhash; assert xxhash.VERSION < "4"' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "datatrove==0.10.1" regex zstandard orjson "spacy==3.8.*" fasttext-numpy2-wheel pyarrow "xxhash<4" tokenizers >&2
fi
