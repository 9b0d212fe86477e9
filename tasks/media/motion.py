"""How much a video moves: dense optical flow (OpenCV's Farnebäck) between two consecutive frames at each
whole second, on small grey copies of them, fed while the video decodes (no second pass).

The measure, `motion`, is how far the picture's content travels in a second, as a share of the frame's
width: a pan across the whole frame in four seconds is 0.25, a slideshow or a title card is near 0, a
handheld walk is a few tenths. The median over the sampled seconds is taken, so that a hard cut (whose
"flow" is noise between two unrelated pictures) does not count as motion.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

WIDTH = 160  # frames are compared at this width (their height follows their aspect)
# Farnebäck's pyramid: 3 levels halve 160 px twice, so a shift of up to ~10% of the width a frame is followed
FLOW = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


class MotionMeter:
    """Fed every decoded frame with its time into the clip; `motion()` once the video is decoded."""

    def __init__(self):
        self.next_s = 0.0
        self.first: tuple[float, np.ndarray] | None = None  # the frame of a second, waiting for the next one
        self.samples: list[float] = []
        self.scaler = VideoReformatter()  # reused: setting one up per frame costs 4x the scaling

    def feed(self, frame: av.VideoFrame, time_s: float) -> None:
        if self.first is None and time_s + 1e-6 < self.next_s:
            return
        grey = self._grey(frame)
        if self.first is None:
            self.first = (time_s, grey)
            return
        start_s, before = self.first
        self.first, self.next_s = None, np.floor(start_s) + 1.0
        if time_s > start_s and before.shape == grey.shape:
            flow = cv2.calcOpticalFlowFarneback(before, grey, None, **FLOW)
            travelled = float(np.hypot(flow[..., 0], flow[..., 1]).mean())
            self.samples.append(travelled / WIDTH / (time_s - start_s))

    def motion(self) -> float | None:
        """Widths a second the content moves (the median over the sampled seconds); None under two frames."""
        return round(float(np.median(self.samples)), 6) if self.samples else None

    def _grey(self, frame: av.VideoFrame) -> np.ndarray:
        height = max(2, round(frame.height * WIDTH / frame.width / 2) * 2)
        small = self.scaler.reformat(frame, width=WIDTH, height=height, format="gray", interpolation="AREA")
        return small.to_ndarray()
