#!/usr/bin/env python3
"""Independent oracle for DoctorGlm.Engine's generation metrics (Evaluation/*.cs).

Re-implements, from their published Python source semantics, what ChatGLM-6B's ptuning/main.py `compute_metrics`
computes -- nltk's `sentence_bleu(..., smoothing_function=SmoothingFunction().method3)` on character lists and
`rouge_chinese.Rouge().get_scores(hyp, ref)` on space-joined tokens -- then writes the scores of a few hand-made cases
to tests/DoctorGlm.Engine.Tests/Fixtures/metrics/compute_metrics.json.

nltk, rouge_chinese and jieba are not installed here, so:
  * the nltk and rouge_chinese functions below follow their source line by line (Fraction with _normalize=False,
    Counter clipping, closest-ref tie-break, method3's 1/(2^k * denominator); cut_sent's four regexes, Ngrams with
    exclusive=True i.e. sets, the recursive _recon_lcs tie-break, the summary-level LCS union);
  * each case carries its tokens (a plausible jieba segmentation written by hand); the C# test feeds the same tokens
    through a fake IWordSegmenter, so only the scoring is compared.
Averages use numpy's np.mean exactly as main.py does. Also dumps math.fsum / round / np.mean of random inputs so the
C# ports of those (PyMath) are checked bit for bit.

Run: /usr/bin/python3 tools/reference/make_metric_fixtures.py   (Python 3.11 + numpy; deterministic)
"""
import itertools
import json
import math
import os
import random
import re
import sys
from collections import Counter
from fractions import Fraction

import numpy as np

sys.setrecursionlimit(10000)


# ----------------------------------------------------------------------------- nltk.translate.bleu_score
def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def modified_precision(references, hypothesis, n):
    counts = Counter(ngrams(hypothesis, n)) if len(hypothesis) >= n else Counter()
    max_counts = {}
    for reference in references:
        reference_counts = Counter(ngrams(reference, n)) if len(reference) >= n else Counter()
        for ngram in counts:
            max_counts[ngram] = max(max_counts.get(ngram, 0), reference_counts[ngram])
    clipped_counts = {ngram: min(count, max_counts[ngram]) for ngram, count in counts.items()}
    numerator = sum(clipped_counts.values())
    denominator = max(1, sum(counts.values()))
    return Fraction(numerator, denominator, _normalize=False)


def closest_ref_length(references, hyp_len):
    ref_lens = (len(reference) for reference in references)
    return min(ref_lens, key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def brevity_penalty(closest_ref_len, hyp_len):
    if hyp_len > closest_ref_len:
        return 1
    elif hyp_len == 0:
        return 0
    else:
        return math.exp(1 - closest_ref_len / hyp_len)


def method3(p_n):
    incvnt = 1
    for i, p_i in enumerate(p_n):
        if p_i.numerator == 0:
            p_n[i] = 1 / (2 ** incvnt * p_i.denominator)
            incvnt += 1
    return p_n


def sentence_bleu(references, hypothesis, weights=(0.25, 0.25, 0.25, 0.25)):
    p_numerators, p_denominators = Counter(), Counter()
    for i, _ in enumerate(weights, start=1):
        p_i = modified_precision(references, hypothesis, i)
        p_numerators[i] += p_i.numerator
        p_denominators[i] += p_i.denominator
    hyp_len = len(hypothesis)
    ref_len = closest_ref_length(references, hyp_len)
    bp = brevity_penalty(ref_len, hyp_len)
    p_n = [Fraction(p_numerators[i], p_denominators[i], _normalize=False) for i, _ in enumerate(weights, start=1)]
    if p_numerators[1] == 0:
        return 0
    p_n = method3(p_n)
    s = (w_i * math.log(p_i) for w_i, p_i in zip(weights, p_n))
    return bp * math.exp(math.fsum(s))


# ----------------------------------------------------------------------------- rouge_chinese (exclusive=True)
def cut_sent(para):
    para = re.sub('([。！？\?])([^”’])', r"\1\n\2", para)
    para = re.sub('(\.{6})([^”’])', r"\1\n\2", para)
    para = re.sub('(\…{2})([^”’])', r"\1\n\2", para)
    para = re.sub('([。！？\?][”’])([^，。！？\?])', r'\1\n\2', para)
    para = para.rstrip()
    return para.split("\n")


def split_into_words(sentences):
    return list(itertools.chain(*[_.split(" ") for _ in sentences]))


def get_word_ngram_set(n, sentences):
    words = split_into_words(sentences)
    return set(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def f_r_p(evaluated_count, reference_count, overlapping_count):
    precision = 0.0 if evaluated_count == 0 else overlapping_count / evaluated_count
    recall = 0.0 if reference_count == 0 else overlapping_count / reference_count
    f1_score = 2.0 * ((precision * recall) / (precision + recall + 1e-8))
    return {"f": f1_score, "p": precision, "r": recall}


def rouge_n(evaluated_sentences, reference_sentences, n):
    if len(evaluated_sentences) <= 0:
        raise ValueError("Hypothesis is empty.")
    if len(reference_sentences) <= 0:
        raise ValueError("Reference is empty.")
    e = get_word_ngram_set(n, evaluated_sentences)
    r = get_word_ngram_set(n, reference_sentences)
    return f_r_p(len(e), len(r), len(e.intersection(r)))


def lcs_table(x, y):
    n, m = len(x), len(y)
    table = {}
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                table[i, j] = 0
            elif x[i - 1] == y[j - 1]:
                table[i, j] = table[i - 1, j - 1] + 1
            else:
                table[i, j] = max(table[i - 1, j], table[i, j - 1])
    return table


def recon_lcs(x, y):
    i, j = len(x), len(y)
    table = lcs_table(x, y)

    def _recon(i, j):
        if i == 0 or j == 0:
            return []
        elif x[i - 1] == y[j - 1]:
            return _recon(i - 1, j - 1) + [(x[i - 1], i)]
        elif table[i - 1, j] > table[i, j - 1]:
            return _recon(i - 1, j)
        else:
            return _recon(i, j - 1)

    return set(map(lambda t: t[0], _recon(i, j)))


def rouge_l_summary_level(evaluated_sentences, reference_sentences):
    if len(evaluated_sentences) <= 0 or len(reference_sentences) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")
    m = len(set(split_into_words(reference_sentences)))
    n = len(set(split_into_words(evaluated_sentences)))
    union_lcs_sum = 0
    union = set()
    for ref_s in reference_sentences:
        prev_count = len(union)
        reference_words = split_into_words([ref_s])
        for eval_s in evaluated_sentences:
            union = union.union(recon_lcs(reference_words, split_into_words([eval_s])))
        union_lcs_sum += len(union) - prev_count
    r_lcs = union_lcs_sum / m
    p_lcs = union_lcs_sum / n
    f_lcs = 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))
    return {"f": f_lcs, "p": p_lcs, "r": r_lcs}


def rouge_get_scores(hyp, ref):
    hyp = [" ".join(_.split()) for _ in cut_sent(hyp) if len(_) > 0]
    ref = [" ".join(_.split()) for _ in cut_sent(ref) if len(_) > 0]
    return {"rouge-1": rouge_n(hyp, ref, 1), "rouge-2": rouge_n(hyp, ref, 2), "rouge-l": rouge_l_summary_level(hyp, ref)}


# ----------------------------------------------------------------------------- compute_metrics
def compute_metrics(cases):
    score_dict = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    per_case = []
    for c in cases:
        pred, label = c["pred"], c["label"]
        hypothesis, reference = c["pred_tokens"], c["label_tokens"]
        assert "".join(hypothesis) == pred and "".join(reference) == label, c
        if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            result = rouge_get_scores(" ".join(hypothesis), " ".join(reference))
        one = {}
        for k, v in result.items():
            one[k] = round(v["f"] * 100, 4)
            score_dict[k].append(one[k])
        bleu_score = sentence_bleu([list(label)], list(pred))
        one["bleu-4"] = round(bleu_score * 100, 4)
        score_dict["bleu-4"].append(one["bleu-4"])
        per_case.append(one)
    means = {k: float(np.mean(v)) for k, v in score_dict.items()}
    return per_case, means


CASES = [
    # identical
    {"pred": "高血压患者应该低盐饮食。", "pred_tokens": ["高血压", "患者", "应该", "低盐", "饮食", "。"],
     "label": "高血压患者应该低盐饮食。", "label_tokens": ["高血压", "患者", "应该", "低盐", "饮食", "。"]},
    # disjoint characters: BLEU 0 (no unigram match), ROUGE 0
    {"pred": "你好", "pred_tokens": ["你好"], "label": "再见", "label_tokens": ["再见"]},
    # same characters reversed: unigrams match, no higher order -> method3 smoothing
    {"pred": "甲乙丙丁", "pred_tokens": ["甲", "乙", "丙", "丁"], "label": "丁丙乙甲", "label_tokens": ["丁", "丙", "乙", "甲"]},
    # partial overlap, two sentences each, shorter hypothesis (brevity penalty)
    {"pred": "建议多喝水，注意休息。如果发烧不退要去医院。",
     "pred_tokens": ["建议", "多", "喝水", "，", "注意", "休息", "。", "如果", "发烧", "不", "退", "要", "去", "医院", "。"],
     "label": "你好，建议多喝水多休息。发烧持续不退的话，请及时到医院就诊！祝早日康复。",
     "label_tokens": ["你好", "，", "建议", "多", "喝水", "多", "休息", "。", "发烧", "持续", "不", "退", "的话", "，",
                      "请", "及时", "到", "医院", "就诊", "！", "祝", "早日康复", "。"]},
    # repeated words: ROUGE counts distinct n-grams (sets); BLEU clips counts; longer hypothesis (bp = 1)
    {"pred": "血糖血糖血糖控制控制不好不好怎么办",
     "pred_tokens": ["血糖", "血糖", "血糖", "控制", "控制", "不好", "不好", "怎么办"],
     "label": "血糖控制不好",
     "label_tokens": ["血糖", "控制", "不好"]},
    # whitespace and latin tokens, a question mark sentence break, a full-width space
    {"pred": "可以服用 aspirin 吗? 每天一次\u3000饭后",
     "pred_tokens": ["可以", "服用", " ", "aspirin", " ", "吗", "?", " ", "每天", "一次", "\u3000", "饭后"],
     "label": "每天一次 aspirin，饭后服用。",
     "label_tokens": ["每天", "一次", " ", "aspirin", "，", "饭后", "服用", "。"]},
    # empty prediction: ROUGE guarded to 0, BLEU 0
    {"pred": "", "pred_tokens": [], "label": "多休息", "label_tokens": ["多", "休息"]},
    # astral-plane character: list(str) yields code points
    {"pred": "好的👍谢谢医生", "pred_tokens": ["好", "的", "👍", "谢谢", "医生"],
     "label": "好的谢谢医生👍", "label_tokens": ["好", "的", "谢谢", "医生", "👍"]},
    # LCS ties across several sentences (union of per-pair LCS word sets)
    {"pred": "甲 乙。乙 甲。丙", "pred_tokens": ["甲", " ", "乙", "。", "乙", " ", "甲", "。", "丙"],
     "label": "乙 甲 丙。甲 乙", "label_tokens": ["乙", " ", "甲", " ", "丙", "。", "甲", " ", "乙"]},
    # LCS tie-break decides which word enters the union: ("甲 乙" vs "乙 甲 。") back-tracks to 乙, so with the second
    # hypothesis sentence "甲" the union is {乙, 甲}; the other tie-break would give {甲} only.
    {"pred": "乙 甲。甲", "pred_tokens": ["乙", " ", "甲", "。", "甲"],
     "label": "甲 乙", "label_tokens": ["甲", " ", "乙"]},
    # ellipsis and quote sentence breaks
    {"pred": "他说：“头疼。”然后……又吐了",
     "pred_tokens": ["他", "说", "：", "“", "头疼", "。", "”", "然后", "……", "又", "吐", "了"],
     "label": "头疼然后又吐了。", "label_tokens": ["头疼", "然后", "又", "吐", "了", "。"]},
]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "DoctorGlm.Engine.Tests", "Fixtures", "metrics")
    per_case, means = compute_metrics(CASES)
    cases = [dict(c, expected=e) for c, e in zip(CASES, per_case)]

    rng = random.Random(1234)
    fsum_inputs = [[rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    round_inputs = [rng.uniform(0, 100) for _ in range(300)] + [0.00005, 0.00015, 2.675, 1.00005, 99.99995, 12.34565]
    mean_inputs = [[round(rng.uniform(0, 100), 4) for _ in range(n)] for n in (1, 3, 7, 8, 9, 16, 17, 100, 129, 300, 1000)]
    doc = {
        "generator": "tools/reference/make_metric_fixtures.py",
        "cases": cases,
        "means": means,
        "fsum": [{"values": v, "sum": math.fsum(v)} for v in fsum_inputs],
        "round4": [{"x": x, "rounded": round(x, 4)} for x in round_inputs],
        "mean": [{"values": v, "mean": float(np.mean(v))} for v in mean_inputs],
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "compute_metrics.json")
    with open(path, "w", encoding="utf-8") as f:
        # repr-exact floats: json.dumps writes the shortest round-tripping form.
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(path)
    for c, e in zip(CASES, per_case):
        print(e, c["pred"][:12])
    print("means", means)


if __name__ == "__main__":
    main()
