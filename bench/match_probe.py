"""How fast does a tiny text tower learn a judge's last step: which of two quoted words equals the answer?

A judge that has worked the answer out ("answer green") and quoted both responses' conclusions ("r1 says
blue ; r2 says green") must still name the one that matches: a match by content. The embedded model's
whole-answer judge is at chance there for colours (stagewise/model/TRAINING.md). This trains a Llama
text tower from scratch (4 layers, the given width and heads; the embedded model's are 128 and 2) on
that step alone, CPU, one thread, and prints held-out accuracy as it goes: how many examples of the
step itself a model of that shape needs. Run on demand; only the wall time depends on the machine:

    python bench/match_probe.py --heads 2 --steps 2000 --words colour
"""
from __future__ import annotations

import argparse
import random
import time

COLOURS = "red blue green orange purple brown pink grey".split()
NUMBERS = [str(i) for i in range(1, 9)]
VOCAB = {w: i for i, w in enumerate(dict.fromkeys(COLOURS + NUMBERS + "image answer ; r1 r2 says choose .".split()))}


def example(rng: random.Random, words: list[str]) -> list[int]:
    """'image w w w w . answer A ; r1 says X ; r2 says Y ; choose K' with A in exactly one of X, Y."""
    answer, other = rng.sample(words, 2)
    better = rng.choice((1, 2))
    said = (answer, other) if better == 1 else (other, answer)
    seq = ["image", *rng.sample(words, 4), ".", "answer", answer, ";", "r1", "says", said[0], ";", "r2", "says",
           said[1], ";", "choose", str(better)]
    return [VOCAB[w] for w in seq]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3000, help="steps of 32 examples")
    p.add_argument("--words", choices=("colour", "number"), default="colour")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    words = COLOURS if args.words == "colour" else NUMBERS
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=4, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      head_dim=args.hidden // args.heads, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(f"probe:{args.seed}")
    held_out = torch.tensor([example(random.Random(f"held-out:{i}"), words) for i in range(500)])
    t0 = time.time()
    for step in range(1, args.steps + 1):
        batch = torch.tensor([example(rng, words) for _ in range(32)])
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        if step % max(1, args.steps // 10) == 0:
            model.eval()
            with torch.no_grad():
                said = model(held_out[:, :-1]).logits[:, -1].argmax(-1)
            model.train()
            right = (said == held_out[:, -1]).float().mean().item()
            print(f"width {args.hidden}, {args.heads} heads, {args.words}s: step {step} ({step * 32} examples) "
                  f"held-out right {right:.2f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
