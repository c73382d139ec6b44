"""Train the bundled default model: ResNet-20 (1 input channel, 10 classes) on Fashion-MNIST.

    python -m odimo.models.train_default            # writes models/resnet20_fmnist.onnx
    python -m odimo.models.train_default --arch darkside_seed --epochs 4 -o seed.onnx

`--arch` trains any network of the zoo (`odimo.models.zoo`) with the same recipe: the reproduction
script uses it for the Darkside seed network and the depthwise-separable MobileNetV1.

Fashion-MNIST is zero-padded to 32x32 (`odimo.retrain.data`). Recipe: 15 epochs of SGD (momentum
0.9, Nesterov, weight decay 5e-4 except on BN and biases), batch 128, one-cycle LR peaking at 0.1,
random crop with 2-pixel padding and horizontal flip, on CPU. Trains on all 60k training images
with a fixed schedule (no model selection, so the test set is only reported, never used to choose
anything). The exported file's accuracy is measured again with onnxruntime on the full test set.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from odimo.ir.verify import onnx_accuracy
from odimo.models.export import MAX_ABS_DIFF, export_onnx, max_abs_diff
from odimo.models.zoo import MODELS, build
from odimo.retrain.augment import augment
from odimo.retrain.data import load_dataset

MODELS_DIR = Path(__file__).resolve().parent


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = model(x[start : start + batch].contiguous(memory_format=torch.channels_last))
            correct += int((logits.argmax(1) == y[start : start + batch]).sum())
    return correct / len(x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odimo.models.train_default")
    parser.add_argument(
        "--arch", choices=sorted(MODELS), default="resnet20", help="network of the zoo (default resnet20)"
    )
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec (odimo.retrain.data)")
    parser.add_argument("-o", "--output", type=Path, help="default: models/<arch>_fmnist.onnx")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (timing)")
    args = parser.parse_args(argv)
    args.output = args.output or MODELS_DIR / f"{args.arch}_fmnist.onnx"

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals make CPU convs many times slower
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    data = load_dataset(args.data)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    in_channels = data.input_shape[0]
    # channels_last: about 25% faster per step with oneDNN on this CPU.
    model = build(args.arch, data.num_classes, in_channels).to(memory_format=torch.channels_last)

    steps_per_epoch = len(x_train) // args.batch_size  # drop the last partial batch
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)  # no weight decay on BN and biases
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss()
    print(
        f"{args.arch} on {data.name}: {len(x_train)} train / {len(x_test)} test images "
        f"{data.input_shape}, {args.epochs} epochs x {steps_per_epoch} steps, "
        f"bs {args.batch_size}, {args.threads} threads, seed {args.seed}",
        flush=True,
    )
    started = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        epoch_start = time.monotonic()
        for step in range(steps_per_epoch):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = augment(x_train[index], 2, generator).contiguous(memory_format=torch.channels_last)
            y = y_train[index]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        test_acc = evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch:2d}/{args.epochs} loss {loss_sum / seen:.4f} "
            f"train_acc {100 * correct / seen:.2f}% test_acc {100 * test_acc:.2f}% "
            f"epoch_time {time.monotonic() - epoch_start:.0f}s "
            f"total {time.monotonic() - started:.0f}s",
            flush=True,
        )

    shape = data.input_shape
    model = model.to(memory_format=torch.contiguous_format)
    export_onnx(model, args.output, shape)
    diff = max(max_abs_diff(model, args.output, shape, batch) for batch in (1, 3))
    onnx_acc = onnx_accuracy(onnx.load(str(args.output)), data.x_test, data.y_test)
    print(
        f"exported {args.output} (opset 17, dynamic batch); max |torch - onnxruntime| {diff:.2e}; "
        f"onnxruntime test accuracy {100 * onnx_acc:.2f}% on {len(data.y_test)} images; "
        f"training time {time.monotonic() - started:.0f}s",
        flush=True,
    )
    return 0 if diff <= MAX_ABS_DIFF else 3


if __name__ == "__main__":
    sys.exit(main())
