"""Built-in demo data: a small, learnable image-classification set drawn procedurally.

Ten shape classes (circle, ring, triangle, square, star, cross, crescent, stripes, dots, checker)
in random colours, sizes, positions and rotations over noisy gradient backgrounds, with varied
image sizes, saved as JPEG in ImageFolder layout (``train/<class>/*.jpg``, ``val/<class>/*.jpg``).
Colour and position carry no label information, so a network has to learn shape. Generation is
deterministic (one seed per image) and needs no download.
"""

import json
import math
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .common import private_temporary_path
from .progress import Progress

__all__ = ["DEMO_CLASSES", "make_demo_dataset", "draw_demo_image"]

DEMO_CLASSES = ("circle", "ring", "triangle", "square", "star", "cross", "crescent", "stripes", "dots", "checker")
_MANIFEST = "demo_manifest.json"


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def _star(cx: float, cy: float, radius: float, angle: float) -> list:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.42
        a = angle + math.pi * k / 5
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _rotated_rect(cx: float, cy: float, half_w: float, half_h: float, angle: float) -> list:
    c, s = math.cos(angle), math.sin(angle)
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def _draw_shape(
    draw: ImageDraw.ImageDraw, label: str, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator
) -> None:
    """Draw the shape of class ``label`` on a mask: 255 inside, 0 outside (holes included)."""
    fill, background = 255, 0
    if label == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif label == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        inner = r * rng.uniform(0.45, 0.65)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=background)
    elif label == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, angle), fill=fill)
    elif label == "square":
        draw.polygon(_polygon(cx, cy, r, 4, angle), fill=fill)
    elif label == "star":
        draw.polygon(_star(cx, cy, r, angle), fill=fill)
    elif label == "cross":
        arm = r * rng.uniform(0.22, 0.32)
        draw.polygon(_rotated_rect(cx, cy, r, arm, angle), fill=fill)
        draw.polygon(_rotated_rect(cx, cy, arm, r, angle), fill=fill)
    elif label == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        shift = r * rng.uniform(0.35, 0.55)
        ox, oy = cx + shift * math.cos(angle), cy + shift * math.sin(angle)
        draw.ellipse([ox - r, oy - r, ox + r, oy + r], fill=background)
    elif label == "stripes":
        n = int(rng.integers(3, 6))
        for k in range(n):
            offset = -r + (2 * r) * (k + 0.5) / n
            c, s = math.cos(angle), math.sin(angle)
            sx, sy = cx - offset * s, cy + offset * c
            draw.polygon(_rotated_rect(sx, sy, r, r / (2.6 * n), angle), fill=fill)
    elif label == "dots":
        n = int(rng.integers(3, 5))
        dot = r / (1.6 * n)
        for i in range(n):
            for j in range(n):
                px = cx - r + (2 * r) * (i + 0.5) / n
                py = cy - r + (2 * r) * (j + 0.5) / n
                draw.ellipse([px - dot, py - dot, px + dot, py + dot], fill=fill)
    elif label == "checker":
        n = int(rng.integers(3, 5))
        cell = 2 * r / n
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    x0, y0 = cx - r + i * cell, cy - r + j * cell
                    draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=fill)
    else:
        raise ValueError(f"unknown demo class {label!r}")


def draw_demo_image(label: str, seed: int) -> Image.Image:
    """Draw one demo image of class ``label``, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(96, 161, size=2))
    # Noisy two-colour gradient background.
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    t = (
        np.linspace(0.0, 1.0, width)[None, :, None]
        if rng.random() < 0.5
        else np.linspace(0.0, 1.0, height)[:, None, None]
    )
    base = c0 * (1 - t) + c1 * t
    pixels = np.broadcast_to(base, (height, width, 3)) + rng.normal(0, rng.uniform(2, 8), size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    mean_background = base.mean(axis=(0, 1))
    # A fill colour far enough from the background to be visible.
    while True:
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if np.abs(np.subtract(fill, mean_background)).sum() > 160:
            break
    r = min(width, height) * rng.uniform(0.28, 0.42)
    cx = rng.uniform(r, width - r)
    cy = rng.uniform(r, height - r)
    mask = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(mask), label, cx, cy, r, rng.uniform(0, 2 * math.pi), rng)
    image.paste(fill, mask=mask)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image


def make_demo_dataset(
    root: "str | Path",
    train_per_class: int = 300,
    val_per_class: int = 60,
    seed: int = 0,
    quality: int = 90,
    progress: bool = True,
) -> Path:
    """Write the demo set under ``root`` (``train/`` and ``val/`` ImageFolder trees) unless an
    identical one is already there. Written to a temporary folder, then renamed, so an interrupted
    run never leaves a half set behind; processes that prepare the same ``root`` at once (ranks on
    several nodes) end with one complete set. Returns ``root``.

    Args:
        root: output folder.
        train_per_class: training images per class.
        val_per_class: validation images per class.
        seed: base seed; the same seed gives the same files.
        quality: JPEG quality.
        progress: show a progress bar.
    """
    root = Path(root)
    spec: Dict[str, object] = {
        "classes": list(DEMO_CLASSES),
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "seed": seed,
        "quality": quality,
        "version": 2,
    }
    manifest = root / _MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == spec:
        return root
    if root.exists() and any(root.iterdir()):
        if not manifest.is_file():
            raise FileExistsError(f"{root} exists and is not a demo dataset; choose another folder or remove it")
        try:
            shutil.rmtree(root)  # a demo set with other settings: regenerate
        except FileNotFoundError:
            pass  # another process is replacing it too
    # One temporary folder per process: Lightning prepares data on local rank 0 of every node, and
    # the nodes may share this folder.
    tmp = private_temporary_path(root)
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [
        (split, label_idx, i)
        for split, n in (("train", train_per_class), ("val", val_per_class))
        for label_idx in range(len(DEMO_CLASSES))
        for i in range(n)
    ]
    display = Progress(f"demo data -> {root}", enabled=progress).phase("draw", len(jobs))
    try:
        for split, label_idx, i in jobs:
            label = DEMO_CLASSES[label_idx]
            split_offset = 0 if split == "train" else 10_000_000
            image_seed = seed * 100_000_000 + split_offset + label_idx * 1_000_000 + i
            out = tmp / split / label / f"{label}_{i:05d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            draw_demo_image(label, image_seed).save(out, quality=quality)
            display.update()
        display.finish()  # the bar's last line before anything else is printed
        (tmp / _MANIFEST).write_text(json.dumps(spec, indent=1))
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            if root.exists() and not any(root.iterdir()):
                root.rmdir()
            tmp.rename(root)
        except OSError:
            # Renaming onto a folder that is not empty fails: another process finished first. Its
            # set is the same one (same settings, same seeds); anything else is a real error.
            if not (manifest.is_file() and json.loads(manifest.read_text()) == spec):
                raise
    finally:
        display.finish()
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; left over if another process won or on error
    return root
