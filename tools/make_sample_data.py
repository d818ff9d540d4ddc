#!/usr/bin/env python3
"""Writes samples/Train/data/{train,eval}.jsonl: a ChatGLM P-Tuning JSONL excerpt of the internal-medicine part of the
Chinese Medical Dialogue dataset (Toyhom, MIT; notice in samples/Train/data/LICENSE-cmd-data.txt).

Rows are shuffled with a fixed seed; the first 1500 usable rows are the training set, the next 100 the evaluation set
(disjoint rows). The prompt is the 'ask' cell, or the title where 'ask' is empty or the corpus's placeholder "无" —
the same rule as DatasetReader's CMD CSV reader. Answers are kept whole (the trainer truncates them to
--max-target-length).

Usage: /usr/bin/python3 tools/make_sample_data.py [--csv PATH] [--pretrain out/pretrain.jsonl]
"""
import argparse
import csv
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "samples", "Train", "data")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=os.path.join(ROOT, "..", "shared", "data", "cmd-internal-medicine", "internal-medicine-qa.csv"))
    ap.add_argument("--pretrain", default=None,
                    help="also write every remaining row (disjoint from train and eval) to this JSONL: the base model's data")
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--eval", type=int, default=100)
    args = ap.parse_args()
    rows = []
    with open(args.csv, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            title, ask, answer = r["title"].strip(), r["ask"].strip(), r["answer"].strip()
            prompt = ask if ask and ask != "无" else title
            if prompt and answer:
                rows.append({"prompt": prompt, "response": answer})
    random.Random(20230401).shuffle(rows)
    parts = {os.path.join(OUT, "train.jsonl"): rows[:args.train], os.path.join(OUT, "eval.jsonl"): rows[args.train:args.train + args.eval]}
    if args.pretrain:
        os.makedirs(os.path.dirname(os.path.abspath(args.pretrain)), exist_ok=True)
        parts[args.pretrain] = rows[args.train + args.eval:]
    for name, part in parts.items():
        with open(name, "w", encoding="utf-8", newline="\n") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(part)} dialogues")


if __name__ == "__main__":
    main()
