"""QualityFilter: which faces are good enough to index, compare or search, and why not.

Each level sets a bar on five measurements of a face. Confidence and Sharpness bars are the 1st,
2nd and 10th percentiles (LOW, MEDIUM, HIGH) of the largest face of every faces/dev image, so a
level refuses roughly that share of ordinary photos' faces on that measurement alone
(bench/quality_bars.py prints the distribution and what each level refuses: about 2%, 5% and
21% of faces/dev faces in all). Pose bars follow
AWS's own guidance for face comparison input (yaw within 45 degrees, pitch within 30 down / 45 up)
at MEDIUM, looser at LOW, tighter at HIGH. The size bar is on the face box's shorter side in pixels:
AWS documents 40 px as the smallest face it detects in a 1920x1080 image; recognition accuracy
falls off steeply below that; HIGH asks for the 2nd percentile of faces/dev. Brightness: HIGH is the
1st percentile of faces/dev; LOW and MEDIUM are set below it by hand (faces/dev has no dark photos
to measure them on), to catch faces lit too little to recognise. AUTO is MEDIUM.
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
    "LOW": Bar(87.1, 43.0, 15.0, 75.0, 50.0, 60.0, 20.0),
    "MEDIUM": Bar(88.4, 43.6, 25.0, 45.0, 30.0, 45.0, 40.0),
    "HIGH": Bar(90.8, 48.2, 31.1, 30.0, 20.0, 30.0, 48.0),
}
BARS["AUTO"] = BARS["MEDIUM"]

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
