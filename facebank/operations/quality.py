"""QualityFilter: which faces are good enough to index, compare or search, and why not.

Each level sets a bar on five measurements of a face. MEDIUM and HIGH: the Confidence and Sharpness
bars are the 2nd and 10th percentiles of the largest face of every faces/dev image (bench/quality_bars.py);
pose bars follow AWS's guidance for face comparison input (yaw within 45 degrees, pitch within 30
down / 45 up) at MEDIUM, tighter at HIGH; the size bar is the box's shorter side in pixels (40 at
MEDIUM: AWS's smallest detected face in a 1920x1080 image; HIGH the 2nd percentile of faces/dev);
Brightness at HIGH is the 1st percentile of faces/dev, MEDIUM's set below it by hand.

AUTO (the default) refuses only what Rekognition refuses: a face too small to be useful, too
blurred or dark, or in extreme pose (issue 21): it refuses 0.34 % of LFW's faces (docs/models.md,
"QualityFilter AUTO"). Measured on LFW's news photos (the API's face of each of the 1,486 photos of
pairs.tsv folds 1-2, ``python bench/lfw.py --folds 2 --quality``):
Sharpness, Brightness, Confidence and pose there are 25.8, 36.4, 89.3 and |Yaw| 41 at the 0.5th
percentile (Sharpness is soft on small or JPEG-compressed faces: MEDIUM's 43.6 refused 27 % of
LFW). The AUTO bars sit below that: Sharpness 25 (a 45 px face blurred by a Gaussian of radius
1.5 falls to 23, a sharp one in a group photo scaled to 37 px stays at 37-45), Brightness 15 (a
face darkened to a quarter: 12), Confidence 50 (just above the detector's own 45: the weakest
real group faces score 51-73), |Yaw| up to 80 and Pitch up to 60 either way (three-quarter and
near-profile faces are kept, as Rekognition keeps them), and a box at least 32 px on its shorter
side (a reasoned default: below it the 150 px recognition chip is more than 4.7x upsampled; LFW
has none). LOW is no stricter than AUTO anywhere (its size bar stays 20 px).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    confidence: float  # detection Confidence, 0-100
    sharpness: float  # Quality.Sharpness, 0-100
    brightness: float  # Quality.Brightness, 0-100
    max_yaw: float  # degrees either way
    max_pitch_down: float  # degrees
    max_pitch_up: float
    min_side_px: float  # shorter side of the face box, in pixels of the decoded image


BARS: dict[str, Bar | None] = {
    "NONE": None,
    "LOW": Bar(50.0, 25.0, 15.0, 80.0, 60.0, 60.0, 20.0),
    "MEDIUM": Bar(88.4, 43.6, 25.0, 45.0, 30.0, 45.0, 40.0),
    "HIGH": Bar(90.8, 48.2, 31.1, 30.0, 20.0, 30.0, 48.0),
}
BARS["AUTO"] = Bar(50.0, 25.0, 15.0, 80.0, 60.0, 60.0, 32.0)

# Rekognition's UnindexedFaces/UnsearchedFaces reasons for a face below the bar; LOW_FACE_QUALITY
# accompanies any of them, as the summary reason.
LOW_FACE_QUALITY = "LOW_FACE_QUALITY"


def quality_reasons(face, level: str) -> list[str]:
    """The reasons face falls below the level's bar; empty when it passes."""
    bar = BARS[level]
    if bar is None:
        return []
    reasons = []
    yaw, pitch = face.pose["Yaw"], face.pose["Pitch"]
    # Rekognition's Pitch is positive when the face looks up.
    if abs(yaw) > bar.max_yaw or pitch > bar.max_pitch_up or -pitch > bar.max_pitch_down:
        reasons.append("EXTREME_POSE")
    if face.quality["Brightness"] < bar.brightness:
        reasons.append("LOW_BRIGHTNESS")
    if face.quality["Sharpness"] < bar.sharpness:
        reasons.append("LOW_SHARPNESS")
    if face.confidence < bar.confidence:
        reasons.append("LOW_CONFIDENCE")
    if min(face.box[2] - face.box[0], face.box[3] - face.box[1]) < bar.min_side_px:
        reasons.append("SMALL_BOUNDING_BOX")
    if reasons:
        reasons.append(LOW_FACE_QUALITY)
    return reasons


def passes_quality(face, level: str) -> bool:
    return not quality_reasons(face, level)
