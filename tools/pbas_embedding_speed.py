"""PBAS training-step and inference time at two patch-embedding dimensions, measured in one process.

The two networks are built from the same backbone and timed interleaved (one training step, one batch-1 inference
each, per repeat), so a busy machine slows both alike and the ratio stays meaningful; report the medians.

    python tools/pbas_embedding_speed.py                      # 1536 (paper, default) vs sized to the backbone (opt-in)
    python tools/pbas_embedding_speed.py --dims 1536 720 auto --image-size 288 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from uad_plugins.plugins.pbas.torch_model import PbasModel


def _dimension(text: str) -> int | None:
    return None if text == "auto" else int(text)


def main() -> None:
    """Build one PbasModel per dimension, time them interleaved and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", default=["1536", "auto"], help="dimensions ('auto' = the default)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default="true", help="'true' (Lite0 ImageNet, offline) or 'false' (random)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    models = {}
    for text in args.dims:
        dim = _dimension(text)
        model = PbasModel(pretrained=args.weights == "true", image_size=args.image_size,
                          pretrain_embed_dimension=dim, target_embed_dimension=dim)
        model.eval()
        model.init_centers([images])
        models[text] = model
    times: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in models}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for key, model in models.items():
            model.train()
            params = list(model.projection.parameters()) + list(model.discriminator.parameters())
            optimizer = torch.optim.Adam(params, lr=1e-4)
            start = time.perf_counter()
            model.training_losses(images).loss.backward()
            optimizer.step()
            times[key]["train"].append(time.perf_counter() - start)
            model.eval()
            with torch.no_grad():
                start = time.perf_counter()
                model.predict(images[:1])
                times[key]["infer"].append(time.perf_counter() - start)
    first = next(iter(models))
    base = {phase: statistics.median(times[first][phase][1:]) for phase in ("train", "infer")}
    print(f"{'dims':>6} {'D':>5} {'train step ms':>14} {'infer bs1 ms':>13} {'train x':>8} {'infer x':>8}")
    for key, model in models.items():
        train = statistics.median(times[key]["train"][1:])
        infer = statistics.median(times[key]["infer"][1:])
        print(f"{key:>6} {model.target_embed_dimension:>5} {train * 1e3:>14.1f} {infer * 1e3:>13.1f} "
              f"{base['train'] / train:>8.2f} {base['infer'] / infer:>8.2f}")


if __name__ == "__main__":
    main()
