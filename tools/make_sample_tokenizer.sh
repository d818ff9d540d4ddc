#!/usr/bin/env bash
# Trains samples/Train/base/tokenizer.model: a small ChatGLM-like SentencePiece unigram model (ice_text.model's
# special pieces, byte fallback, spaces kept, NFKC) on the text of the sample's training dialogues, with the settings
# of tools/reference/make_tokenizer_fixtures.py's "chatglm_like_unigram". Deterministic for a given spm_train
# (Debian's sentencepiece package: apt-get install -y sentencepiece) and input.
#
# Usage: tools/make_sample_tokenizer.sh [VOCAB_SIZE]   (default 5000)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
vocab="${1:-5000}"
data="$root/samples/Train/data/train.jsonl"
out="$root/samples/Train/base"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One line per prompt and per response; ChatGLM's tokenizer turns "\n" into <n>, so a newline inside a text is <n> here too.
/usr/bin/python3 - "$data" "$work/corpus.txt" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as o:
    for line in f:
        r = json.loads(line)
        for t in (r["prompt"], r["response"]):
            o.write(t.replace("\t", "<|tab|>").replace("\n", "<n>") + "\n")
PY

control="[MASK],[gMASK],[sMASK],<unused_0>,<sop>,<eop>,<ENC>,<dBLOCK>"
user="<n>,<|tab|>"
for n in $(seq 2 80); do user="$user,<|blank_$n|>"; done

cd "$work"
spm_train --input=corpus.txt --model_prefix=tokenizer --vocab_size="$vocab" --model_type=unigram \
  --character_coverage=0.9995 --byte_fallback=true --num_threads=1 --seed_sentencepiece_size=100000 \
  --normalization_rule_name=nmt_nfkc --remove_extra_whitespaces=false --add_dummy_prefix=true \
  --pad_id=3 --user_defined_symbols="$user" --control_symbols="$control" >spm_train.log 2>&1 \
  || { cat spm_train.log; exit 1; }
mkdir -p "$out"
cp tokenizer.model "$out/tokenizer.model"
echo "wrote $out/tokenizer.model ($vocab pieces)"
