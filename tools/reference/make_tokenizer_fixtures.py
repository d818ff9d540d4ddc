#!/usr/bin/python3
"""Tokenizer parity fixtures: small SentencePiece models trained with Debian's `spm_train` and the
ids/decodings that `spm_encode` / `spm_decode` (sentencepiece 0.1.97) give for a test corpus.

The C# SentencePiece implementation (src/DoctorGlm.Engine/Tokenization) must reproduce these
outputs exactly. Only the command-line tools are used (no Python `sentencepiece` module), so the
oracle is the same C++ code the spec names (§6.1).

Usage:  /usr/bin/python3 tools/reference/make_tokenizer_fixtures.py [--out DIR]
Needs:  apt-get install -y sentencepiece   (spm_train, spm_encode, spm_decode in /usr/bin)
Data:   /work/shared/data/cmd-internal-medicine/internal-medicine-qa.csv (MIT, see LICENSE there)

Outputs (default tests/DoctorGlm.Engine.Tests/Fixtures/tokenizer/):
  corpus.txt                   test lines, UTF-8, one per line (medical Q&A + crafted edge cases)
  <model>.model                the trained ModelProto
  <model>.ids.txt              spm_encode --output_format=id of corpus.txt, one line per input line
  <model>.decoded.txt          spm_decode --input_format=id of those ids
  chatglm_cases.json           raw texts for the ChatGLM tokenizer (may contain \\n, \\t, space runs)
  chatglm_like_*.chatglm.ids.txt  spm_encode of those texts after ChatGLM's preprocessing (§6.3 step 2)
  chatglm_like_*.chatglm.decoded.txt  spm_decode of those ids (before ChatGLM's <n>/tab/blank postprocessing)
  LICENSE-cmd-internal-medicine.txt  the data licence of the text excerpt in corpus.txt
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = "/work/shared/data/cmd-internal-medicine"
CSV = os.path.join(DATA, "internal-medicine-qa.csv")

CONTROL = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
USER_DEFINED = ["<n>", "<|tab|>"] + [f"<|blank_{n}|>" for n in range(2, 81)]

# name -> spm_train options (byte fallback unless overridden, as ice_text.model has it)
MODELS = {
    "bpe_nfkc": ["--model_type=bpe", "--normalization_rule_name=nmt_nfkc"],
    "bpe_identity": ["--model_type=bpe", "--normalization_rule_name=identity"],
    "unigram_nfkc": ["--model_type=unigram", "--normalization_rule_name=nmt_nfkc"],
    "unigram_identity": ["--model_type=unigram", "--normalization_rule_name=identity"],
    # Without byte fallback: exercises unknown pieces (a run of unknown characters is one <unk>).
    "unigram_nofallback": ["--model_type=unigram", "--normalization_rule_name=identity", "--byte_fallback=false"],
    "bpe_nofallback": ["--model_type=bpe", "--normalization_rule_name=identity", "--byte_fallback=false"],
    # ChatGLM-like: ice_text.model's special pieces, spaces kept (the blank tokens only make sense
    # when runs of spaces survive normalisation), NFKC (the spec's test vectors map "，" to the id of ",").
    "chatglm_like_unigram": ["--model_type=unigram", "--normalization_rule_name=nmt_nfkc",
                             "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
                             "--pad_id=3", "--user_defined_symbols=" + ",".join(USER_DEFINED),
                             "--control_symbols=" + ",".join(CONTROL)],
    "chatglm_like_bpe": ["--model_type=bpe", "--normalization_rule_name=nmt_nfkc",
                         "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
                         "--pad_id=3", "--user_defined_symbols=" + ",".join(USER_DEFINED),
                         "--control_symbols=" + ",".join(CONTROL)],
}

CRAFTED = [
    "",
    " ",
    "   ",
    "a",
    "  leading spaces",
    "trailing spaces   ",
    "multiple    internal     spaces  and   tabs",
    "\ttab\tseparated\tcolumns\t",
    "全角：ＡＢＣ１２３，。！？（括号）",
    "ﾊﾝｶｸｶﾀｶﾅ と ＨＡＬＦ",
    "①②③ ㍻ ﬁ ² ½ ™ Ⅻ",
    "emoji 👋🏥 test 😀😀",
    "👋",
    "𠀀𠀁𠀂 rare 𪚥 𡃁𢀖",
    "Hello世界123 mixed Latin/CJK: 高血压hypertension 130/80mmHg",
    "3.14159 2023-04-01 100% 1,234,567 0.5mg/kg",
    "!?.,;:'\"()[]{}<>@#$%^&*_-+=~`|\\/",
    "<n>literal<|blank_3|>and[gMASK]<sop> pieces",
    "\u3000ideographic\u3000space\u3000",
    "NBSP\u00a0here and soft\u00adhyphen and zero\u200bwidth",
    "ß Å é e\u0301 ﬀ Ǆ",
    "哈" * 120,
    "ab" * 60,
    "x" + " " * 81 + "y",
    "1234567890" * 8,
    "问：你好答：你好👋！我是人工智能助手 ChatGLM-6B，很高兴见到你，欢迎问我任何问题。",
    "def main():    print('hello world')\t# greeting",
    "ÀÉÎÕÜ àéîõü Ωμέγα Кириллица العربية हिन्दी ไทย 한국어 日本語のテキスト",
    "▁already▁escaped ▁ ▁▁",
    "a  b",
    " a",
    "  ",
]

# Raw texts for ChatGlmTokenizer (newlines are fine here: they become <n> before SentencePiece).
CHATGLM_CASES = [
    "你好",
    "[Round 0]\n问：你好\n答：你好👋！我是人工智能助手 ChatGLM-6B，很高兴见到你，欢迎问我任何问题。\n[Round 1]\n问：晚上睡不着应该怎么办\n答：",
    "def main():\n    print('hello world')\t# greeting",
    "a    b",
    "x" + " " * 81 + "y",
    " " * 83,
    "  two leading, one trailing ",
    "line1\n\nline3\n",
    "\t\tdouble tab",
    "高血压患者能吃党参吗？\n我有高血压这两天女婿来的时候给我拿了些党参泡水喝。",
    "emoji 👋🏥 and rare 𠀀",
    "全角：ＡＢＣ１２３",
    "mix of  2 spaces,   3 spaces and\t tab+space",
    "",
    "\n",
]


def chatglm_preprocess(text: str) -> str:
    """§6.3 step 2, exactly as SPTokenizer._preprocess does it (str.replace semantics)."""
    text = text.replace("\n", "<n>")
    text = text.replace("\t", "<|tab|>")
    for n in range(80, 1, -1):
        text = text.replace(" " * n, f"<|blank_{n}|>")
    return text


def clean(s: str) -> str:
    return " ".join(s.replace("\r", " ").replace("\n", " ").split()) if s else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/DoctorGlm.Engine.Tests/Fixtures/tokenizer"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    with open(CSV, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]

    # Training text: ask/answer of the first 1500 rows (one line per field).
    train_lines = []
    for r in rows[:1500]:
        for field in (r[1], r[2], r[3]):
            t = clean(field)
            if t:
                train_lines.append(t)

    # Test lines: 300 real lines, half from the training rows, half from rows never trained on.
    real = []
    for i, r in enumerate(rows[:1500:10]):
        real.append(clean(r[2 + (i % 2)])[:300])
    for i, r in enumerate(rows[5000:7500:16]):
        real.append(clean(r[1 + (i % 3)])[:300])
    real = [t for t in real if t][:300]
    corpus = real + CRAFTED
    for line in corpus:
        assert "\n" not in line and "\r" not in line

    tmp = tempfile.mkdtemp()
    try:
        train_path = os.path.join(tmp, "train.txt")
        with open(train_path, "w", encoding="utf-8") as f:
            f.write("\n".join(train_lines) + "\n")
        corpus_path = os.path.join(args.out, "corpus.txt")
        with open(corpus_path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(corpus) + "\n")
        with open(os.path.join(args.out, "chatglm_cases.json"), "w", encoding="utf-8") as f:
            json.dump(CHATGLM_CASES, f, ensure_ascii=False, indent=1)
        chatglm_pre = os.path.join(tmp, "chatglm_pre.txt")
        with open(chatglm_pre, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(chatglm_preprocess(t) for t in CHATGLM_CASES) + "\n")

        for name, opts in MODELS.items():
            # Relative paths (run inside tmp): the trainer_spec stored in the model records them, and a
            # random temp-dir name there would make every rerun produce different bytes.
            prefix = os.path.join(tmp, name)
            subprocess.run(["spm_train", "--input=train.txt", f"--model_prefix={name}",
                            "--vocab_size=3000", "--character_coverage=0.9995", "--byte_fallback=true",
                            "--num_threads=2", "--seed_sentencepiece_size=100000", *opts],  # later flags win
                           check=True, capture_output=True, cwd=tmp)
            model = os.path.join(args.out, name + ".model")
            shutil.copyfile(prefix + ".model", model)
            encode(model, corpus_path, os.path.join(args.out, name + ".ids.txt"),
                   os.path.join(args.out, name + ".decoded.txt"))
            if name.startswith("chatglm_like"):
                encode(model, chatglm_pre, os.path.join(args.out, name + ".chatglm.ids.txt"),
                       os.path.join(args.out, name + ".chatglm.decoded.txt"))
    finally:
        shutil.rmtree(tmp)

    shutil.copyfile(os.path.join(DATA, "LICENSE"), os.path.join(args.out, "LICENSE-cmd-internal-medicine.txt"))


def encode(model: str, inp: str, ids_out: str, decoded_out) -> None:
    with open(inp, "rb") as fi, open(ids_out, "wb") as fo:
        subprocess.run(["spm_encode", f"--model={model}", "--output_format=id"], stdin=fi, stdout=fo, check=True)
    if decoded_out:
        with open(ids_out, "rb") as fi, open(decoded_out, "wb") as fo:
            subprocess.run(["spm_decode", f"--model={model}", "--input_format=id"], stdin=fi, stdout=fo, check=True)


if __name__ == "__main__":
    main()
