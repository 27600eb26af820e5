"""The original SignVer example, step by step with signver-torch: detect → crops → clean → extract → match.

    python docs/signver_flow.py                       # on the shipped example page and references
    python docs/signver_flow.py PAGE REFERENCE...     # on your own

It mirrors the original notebook's calls (Detector.detect's tuple, get_image_crops, make_square,
Cleaner.clean on an (N, H, W, 3) batch, MetricExtractor.extract, Matcher.cosine_distance/verify) and
writes docs/signver_flow.png with the crops, their cleaned versions and each distance.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from signver_torch import Cleaner, Detector, Matcher, MetricExtractor
from signver_torch.utils import get_image_crops, img_to_np_array, make_square, plot_np_array

ROOT = Path(__file__).resolve().parent.parent
page = sys.argv[1] if len(sys.argv) > 1 else ROOT / "examples" / "contract.png"
references = sys.argv[2:] or sorted((ROOT / "examples" / "references").glob("*.png"))

detector = Detector().load("default")
cleaner = Cleaner().load("default")
extractor = MetricExtractor().load("default")
matcher = Matcher()

# 1. detect: boxes [ymin, xmin, ymax, xmax] in 0..1, classes 1 signature, 2 initials, 3 redaction, 4 date
image = img_to_np_array(page)
boxes, scores, classes, detections = detector.detect(image)
print(f"{detections} detections:", [(int(c), round(float(s), 2)) for c, s in zip(classes, scores)])

# 2. crop the signatures and square them on paper
signature_boxes = boxes[classes == 1]
crops = get_image_crops(image, signature_boxes, scores[classes == 1], threshold=0.5)
squares = [np.asarray(make_square(Image.fromarray(crop)).resize((224, 224))) / 255.0 for crop in crops]

# 3. clean: (N, 224, 224, 3) in [0, 1] -> the same shape, lines and printing removed
cleaned = cleaner.clean(np.stack(squares))

# 4. extract: (N, 224, 224, 3) -> (N, 256) unit vectors; the references go through the same steps
reference_squares = [np.asarray(make_square(Image.open(r).convert("RGB")).resize((224, 224))) / 255.0 for r in references]
query_features = extractor.extract(cleaned)
reference_features = extractor.extract(cleaner.clean(np.stack(reference_squares)))

# 5. match: mean cosine distance to the references against the calibrated threshold
for index, feature in enumerate(query_features):
    distances = [matcher.cosine_distance(feature, reference) for reference in reference_features]
    mean = float(np.mean(distances))
    print(f"signature {index}: distances {np.round(distances, 3).tolist()}, mean {mean:.3f}, "
          f"threshold {matcher.threshold:.3f} -> {'same writer' if mean <= matcher.threshold else 'different writer'}")

plot_np_array([*squares, *cleaned], [f"crop {i}" for i in range(len(squares))] + [f"cleaned {i}" for i in range(len(cleaned))],
              path=Path(__file__).resolve().parent / "signver_flow.png")
