# Sourced by scripts/lfw_recipe.sh and scripts/model_recipe.sh: the LFW-a archive and the
# official pairs.txt (LFW_DATA, ../shared/data by default), checked before anything runs and
# extracted once into $OUT/lfw_gray250 (through a temporary folder, so a killed extraction is
# redone, never half used). The caller sets OUT; this sets DATA, ARCHIVE and PAIRS.
DATA=${LFW_DATA:-../shared/data}
ARCHIVE=$DATA/lfw_a_gray250.tar.gz
PAIRS=$DATA/lfw_pairs.txt
ARCHIVE_SHA256=723c32a6e84add6386bf38109727a97aada0bc48bb8f97bc5731084aa1490fcf
PAIRS_SHA256=ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592

require_lfw_data() {
    local file
    for file in "$ARCHIVE" "$PAIRS"; do
        [ -f "$file" ] || { echo "error: $file not found; set LFW_DATA to the folder holding" \
            "lfw_a_gray250.tar.gz and lfw_pairs.txt" >&2; exit 2; }
    done
    mkdir -p "$OUT"
}

extract_lfw() {
    [ -d "$OUT/lfw_gray250" ] && return 0
    echo "== extract $ARCHIVE -> $OUT/lfw_gray250"
    echo "$ARCHIVE_SHA256  $ARCHIVE" | sha256sum --check --quiet
    echo "$PAIRS_SHA256  $PAIRS" | sha256sum --check --quiet
    rm -rf "$OUT/.extracting"
    mkdir -p "$OUT/.extracting"
    tar -xzf "$ARCHIVE" -C "$OUT/.extracting"
    mv "$OUT/.extracting/lfw_gray250" "$OUT/lfw_gray250"
    rmdir "$OUT/.extracting"
}
