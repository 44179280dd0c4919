"""How a dataset's faces are framed, and what cropping a user's faces another way costs a detector.

    python tools/framing_cost.py -d synthetic_dataset --data-root ../shared/data                      # the framing only
    python tools/framing_cost.py -d synthetic_dataset --data-root ../shared/data -cpp CKPT --margins -0.15 0.19 0.3

MTCNN finds the face in each image of --split (test by default); the framing is the median margin (crop side / box side - 1) / 2 that the
dataset's own crops have around that box (train_main.py measures the same for every run's training faces). With a checkpoint, the
faces are cut again as detect.py would cut a user's photo at each --margin (a square around the MTCNN box, resized
to the model's size) and scored: the AUC per margin, beside the AUC on the images as the dataset gives them, says what
a framing unlike the training faces' costs. Writes out/framing_<dataset>.json (framing_<dataset>_val.json for --split
val, the split to choose a margin on).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cli import (
    add_checkpoint_flag,
    add_data_flags,
    add_device_flag,
    add_output_flags,
    cli_main,
    crop_margin,
    positive_int,
)
from common import CLASS_NAMES, DATASETS
from detector import load_model_from_checkpoint
from face_detection import FaceDetector, crop_face, framing_margin
from faces_dataset import dataset_dir, get_transforms, list_images, load_rgb
from files import atomic_write_json
from metrics import safe_auc
from models import p_fake
from utils import get_device


@cli_main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", choices=DATASETS, required=True)
    add_data_flags(p, dataset=False)
    add_checkpoint_flag(p, required=False, help="score the re-cut faces with this model")
    p.add_argument("--margins", type=crop_margin, nargs="+", default=[-0.15, 0.0, 0.19, 0.3], help="margins to cut at")
    p.add_argument("--split", choices=("test", "val"), default="test", help="the split whose faces are re-cut: val to "
                   "choose a margin (e.g. tools/fuse_detectors.py --margin), test to report one (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, default=200, help="images per class (default: %(default)s)")
    add_device_flag(p)
    add_output_flags(p, out="for framing_<dataset>.json")
    args = p.parse_args(argv)
    device = get_device(args.device)
    folder = dataset_dir(args.dataset, args.split, args.data_root)
    files = [(f, label) for label, cls in enumerate(CLASS_NAMES) for f in list_images(folder / cls)[: args.limit]]
    detector = FaceDetector(args.device)
    found = []
    for path, label in files:
        image = load_rgb(path)
        faces = detector.detect([image])[0]
        if faces:
            found.append((image, faces[0], label))
    margins = [framing_margin(image.size, face.box) for image, face, _ in found]
    result: dict = {"dataset": args.dataset, "split": args.split, "images": len(files), "faces_found": len(found),
                    "framing_margin_median": float(np.median(margins)),
                    "framing_margin_iqr": [float(q) for q in np.percentile(margins, [25, 75])]}
    print(f"{args.dataset}: MTCNN found a face in {len(found)} of {len(files)} {args.split} images; the crops' margin around it: "
          f"median {result['framing_margin_median']:+.3f} (IQR {result['framing_margin_iqr'][0]:+.3f} to "
          f"{result['framing_margin_iqr'][1]:+.3f})")
    if args.checkpoint_path is not None:
        detector = load_model_from_checkpoint(args.checkpoint_path, device)
        model = detector.module
        transform = get_transforms(False, detector.image_size, detector.normalization)
        labels = np.array([label for _, _, label in found])

        def auc_of(images: list) -> float | None:
            with torch.no_grad():
                scores = torch.cat([p_fake(model(torch.stack([transform(im) for im in images[k:k + 32]]).to(device))).cpu()
                                    for k in range(0, len(images), 32)])
            return safe_auc(labels, scores.numpy())

        result["auc_as_given"] = auc_of([image for image, _, _ in found])
        result["auc_by_margin"] = {m: auc_of([crop_face(image, face, m, detector.image_size) for image, face, _ in found])
                                   for m in args.margins}
        print(f"AUC on the images as given: {result['auc_as_given']:.4f}; re-cut at margin "
              + ", ".join(f"{m:+.2f}: {a:.4f}" for m, a in result["auc_by_margin"].items()))
    suffix = "" if args.split == "test" else f"_{args.split}"
    atomic_write_json(args.out_dir / f"framing_{args.dataset}{suffix}.json", result)
    return result


if __name__ == "__main__":
    main()
