"""Video with PyAV (FFmpeg): one demux pass decodes every frame of the picture and the sound, and feeds
what the recipe asks for along the way.

- Facts: duration, fps, resolution, codecs, the sound track's presence, rate and length. Durations
  come from frame timestamps, not frame count / nominal rate, so variable-frame-rate video and
  streams that start late measure right. Truncation is judged against what the file declares: the
  video stream's frame count where it has one (MP4), else the container's duration, compared with the
  end of the longest decoded stream.
- The sound track goes through the audio path (tasks/media/audio.py): loudness scores, Chromaprint
  fingerprint, and the log-mel spectrogram when the recipe asks for one.
- Keyframes: the pHash of one frame a second (for dedupe), and optionally N thumbnails spread evenly
  over the clip (for alignment scoring and browsing), published beside it as JPEGs.
- A downscale / frame-rate preset re-encodes to H.264 + AAC in MP4; without one the file is
  published as it came.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from pydantic import Field

from ..core.settings import Strict
from . import MediaError
from .audio import TRUNCATION_TOLERANCE, AudioPreset, SoundAnalysis, log_mel, open_container, shape
from .fingerprint import KeyframeHashes
from .motion import MotionMeter
from .ocr import OcrMode
from .scenes import ScenesConfig


class VideoCleanConfig(Strict):
    """Videos are published as they came unless they exceed `short_side` or `max_fps`: those are
    re-encoded (H.264 at `crf`, AAC sound, MP4), frame times kept. Their sound is measured and gets a
    log-mel (features.log_mel) at clean.audio's rate either way."""

    short_side: int | None = Field(None, ge=16)  # shorter side at most this (never up)
    max_fps: float | None = Field(None, gt=0)  # at most this many frames a second (frames dropped)
    crf: int = Field(23, ge=0, le=51)  # x264 quality: 18 near-transparent, 28 small
    # the `motion` score: how far the picture's content travels a second, in frame widths (optical flow on
    # small frames, one pair a second; off by default: it cost 9-23 % of clean in bench/clean.py);
    # filter.min_motion / max_motion judge it
    motion: bool = False
    # find where a voice speaks in the sound track (Silero VAD): the `speech_ratio` score and the segments
    # in the item's features, as for recordings (clean.audio.voice_activity)
    voice_activity: bool = False
    # text in the picture, as clean.image.ocr, over the keyframes (features.keyframes): the median `text_area`
    # of the keyframes, and each line read once
    ocr: OcrMode = "off"
    # cut each video longer than max_scene_s (or every video) into one item per scene (tasks/media/scenes.py),
    # before clean: each scene is cleaned, deduplicated, filtered and published as a clip; the scenes of one
    # video keep its group (never split apart) and its texts; null: videos are not cut
    scenes: ScenesConfig | None = None


class KeyframesConfig(Strict):
    count: int = Field(8, ge=1, le=256)  # spread evenly over each video
    short_side: int = Field(224, ge=16)


AUDIO_DEFAULTS = AudioPreset()

# FFmpeg demuxer name -> the extension we publish under (its matroska demuxer also reads WebM,
# and .mkv names both correctly)
_EXTENSIONS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi"}
OUT_TIME_BASE = Fraction(1, 90_000)  # MPEG's clock: fine enough for any frame time, variable rate kept


@dataclass(frozen=True)
class VideoPreset:
    """How clean shapes video. With neither `short_side` nor `max_fps` the file is published as it came;
    with either, a video that exceeds it is re-encoded (H.264 at `crf`, AAC sound, MP4)."""

    short_side: int | None = None  # scale so the shorter side is at most this (never up)
    max_fps: float | None = None  # drop frames down to at most this rate
    crf: int = 23  # x264 quality: 18 near-transparent, 28 small
    keyframes: int = 0  # thumbnails spread evenly over the clip, published as <key>.keyframe<i>.jpg
    keyframe_side: int = 224  # their shorter side
    motion: bool = False  # measure how much the picture moves (tasks/media/motion.py): the `motion` score


@dataclass
class DecodedVideo:
    data: bytes  # as published: the input itself, or its re-encode
    ext: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    sample_rate: int | None
    audio_duration_s: float | None
    keyframe_phashes: list[str]  # one frame a second
    fingerprint: list[int]  # raw Chromaprint of the audio track; empty without one
    scores: dict[str, float] = field(default_factory=dict)  # the sound track's loudness, when there is one
    thumbnails: list[tuple[float, bytes]] = field(default_factory=list)  # (time s, JPEG)
    mel: bytes | None = None  # log-mel of the sound track (.npy), as for audio clips
    mel_params: dict | None = None
    source: dict = field(default_factory=dict)  # the input's own size, rate and codec when re-encoded


class _Span:
    """First start and last end, in seconds, of the frames of one stream."""

    def __init__(self):
        self.start: float | None = None
        self.end: float | None = None

    def add(self, start: float | None, length: float) -> None:
        if start is None:  # no timestamp: continue from the previous frame
            start = self.end or 0.0
        self.start = start if self.start is None else min(self.start, start)
        self.end = start + length if self.end is None else max(self.end, start + length)

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else self.end - self.start


def decode_video(
    data: bytes, preset: VideoPreset = VideoPreset(), audio_preset: AudioPreset = AUDIO_DEFAULTS
) -> DecodedVideo:
    """Decode every frame once: measure the pictures and the sound, hash keyframes, and re-encode where the
    preset asks (all in the one pass). Raises MediaError for a video that cannot be used."""
    with open_container(data) as container:
        one = _OnePass(container, preset, audio_preset)
        try:
            for packet in container.demux(*one.streams):
                for frame in packet.decode():
                    if packet.stream is one.video:
                        one.picture(frame)
                    elif one.sound is not None:
                        one.hear(frame)
            out = one.finish()
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {one.frames} frames: {e}") from None
    one.check_whole()
    result = one.result(data)
    if one.sound is not None and audio_preset.log_mel:
        mono, mel_rate = shape(
            one.sound.samples(), one.rate, AudioPreset(sample_rate=audio_preset.sample_rate, mono=True)
        )
        result.mel, result.mel_params = log_mel(mono, mel_rate, dict(audio_preset.log_mel))
    if out is not None:
        _as_reencoded(result, out, one.encoder, one.audio is not None, len(data))
    return result


class _OnePass:
    """The state of one pass over a video's frames: what is counted, measured and re-encoded as they come."""

    def __init__(self, container, preset: VideoPreset, audio_preset: AudioPreset):
        if not container.streams.video:
            raise MediaError("no_video_stream", f"container {container.format.name} has no video stream")
        self.video = video = container.streams.video[0]
        self.audio = audio = container.streams.audio[0] if container.streams.audio else None
        self.ext = _EXTENSIONS.get(container.format.name)
        if self.ext is None:
            raise MediaError("unsupported_container", container.format.name)
        self.nominal_fps = float(video.average_rate or video.guessed_rate or 0)
        self.declared_frames = video.frames or 0
        # the container's duration, compared with where the decoded streams end: Matroska states an
        # end time, other formats a span; against the absolute end both err towards keeping the file
        self.declared_end = container.duration / av.time_base if container.duration else None
        self.rate = rate = audio.codec_context.sample_rate if audio is not None else None
        self.width, self.height = video.codec_context.width, video.codec_context.height
        self.frames = 0
        self.video_span, self.audio_span = _Span(), _Span()
        self.keyframes = KeyframeHashes()
        self.motion = MotionMeter() if preset.motion else None
        self.thumbnails = Thumbnails(preset.keyframes, preset.keyframe_side) if preset.keyframes else None
        hold = bool(audio_preset.log_mel)
        self.sound = SoundAnalysis(rate, audio.codec_context.layout.name, hold=hold) if rate else None
        self.encoder = Reencoder.for_video(preset, self.width, self.height, self.nominal_fps, audio)
        self.frame_s = 1 / self.nominal_fps if self.nominal_fps else 0.0
        self.streams = [s for s in (video, audio) if s is not None]

    def picture(self, frame) -> None:
        self.frames += 1
        self.width, self.height = frame.width, frame.height
        self.video_span.add(frame.time, self.frame_s)
        at = frame.time if frame.time is not None else self.video_span.end - self.frame_s
        t = at - self.video_span.start  # into the clip
        self.keyframes.feed(frame, t)
        if self.motion is not None:
            self.motion.feed(frame, t)
        if self.thumbnails is not None:
            self.thumbnails.feed(frame, t)
        if self.encoder is not None:
            self.encoder.picture(frame, at)  # the source's clock: the sound stays in step

    def hear(self, frame) -> None:
        self.audio_span.add(frame.time, frame.samples / self.rate)
        self.sound.feed(frame)
        if self.encoder is not None:
            self.encoder.sound(frame)

    def finish(self) -> bytes | None:
        if self.sound is not None:
            self.sound.finish()
        return self.encoder.finish() if self.encoder is not None else None

    def check_whole(self) -> None:
        """Refuse a video with no frames, or fewer than it declares (a download cut short)."""
        if self.frames == 0 or self.nominal_fps <= 0:
            raise MediaError("empty", "no video frames decoded")
        declared, end = self.declared_frames, self.declared_end
        if declared and self.frames < TRUNCATION_TOLERANCE * declared:
            raise MediaError("truncated", f"decoded {self.frames} of {declared} declared frames")
        if not declared and end:
            decoded_end = max(s.end for s in (self.video_span, self.audio_span) if s.end is not None)
            if decoded_end < TRUNCATION_TOLERANCE * end - self.frame_s:
                raise MediaError("truncated", f"streams end at {decoded_end:.3f}s of a declared {end:.3f}s")

    def _motion(self) -> dict[str, float]:
        motion = self.motion.motion() if self.motion is not None else None
        return {} if motion is None else {"motion": motion}

    def result(self, data: bytes) -> DecodedVideo:
        duration = self.video_span.seconds
        if self.audio_span.end is None:  # a sound stream with no samples is no sound
            self.audio = self.sound = None
        audio, sound = self.audio, self.sound
        return DecodedVideo(
            data=data,
            ext=self.ext,
            width=self.width,
            height=self.height,
            fps=self.frames / duration if duration else self.nominal_fps,
            num_frames=self.frames,
            duration_s=duration,
            video_codec=self.video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            sample_rate=self.rate if audio is not None else None,
            audio_duration_s=self.audio_span.seconds if audio is not None else None,
            keyframe_phashes=self.keyframes.hashes,
            fingerprint=sound.fingerprint.result() if sound is not None else [],
            scores={**(sound.meter.scores() if sound is not None else {}), **self._motion()},
            thumbnails=self.thumbnails.result() if self.thumbnails is not None else [],
        )


def _as_reencoded(result: DecodedVideo, out: bytes, encoder: Reencoder, has_sound: bool, size: int) -> None:
    """The result describes the re-encode it publishes; `source` keeps what the input was."""
    result.source = {
        "width": result.width,
        "height": result.height,
        "fps": round(result.fps, 3),
        "video_codec": result.video_codec,
        "audio_codec": result.audio_codec,
        "bytes": size,
    }
    duration = result.duration_s
    result.data, result.ext, result.video_codec = out, "mp4", "h264"
    result.width, result.height = encoder.width, encoder.height
    result.num_frames = encoder.frames
    result.fps = encoder.frames / duration if duration else encoder.fps
    result.audio_codec = "aac" if has_sound else None


class Thumbnails:
    """`count` frames spread evenly over a clip of any length, decided while it decodes (no duration
    needed up front, memory bounded): a frame is taken every `step` seconds; when 2 x count are held,
    every other one goes and the step doubles. The count picked at the end are evenly spaced."""

    FIRST_STEP_S = 0.1

    def __init__(self, count: int, side: int):
        self.count, self.side = count, side
        self.step, self.next_s = self.FIRST_STEP_S, 0.0
        self.held: list[tuple[float, av.VideoFrame]] = []
        self.scaler = VideoReformatter()  # reused: setting one up per frame costs 4x the scaling

    def feed(self, frame: av.VideoFrame, time_s: float) -> None:
        if time_s + 1e-6 < self.next_s:
            return
        scale = min(1.0, self.side / min(frame.width, frame.height))
        small = self.scaler.reformat(
            frame,
            width=max(1, round(frame.width * scale)),
            height=max(1, round(frame.height * scale)),
            format="rgb24",
            interpolation="AREA",
        )
        self.held.append((time_s, small))
        if len(self.held) >= 2 * self.count:
            self.held = self.held[::2]
            self.step *= 2
        self.next_s = self.held[-1][0] + self.step

    def picks(self) -> list[tuple[float, av.VideoFrame]]:
        chosen = np.unique(np.round(np.linspace(0, len(self.held) - 1, min(self.count, len(self.held)))).astype(int))
        return [self.held[i] for i in chosen]

    def result(self) -> list[tuple[float, bytes]]:
        out = []
        for time_s, frame in self.picks():
            buffer = io.BytesIO()
            frame.to_image().save(buffer, format="JPEG", quality=90)
            out.append((round(time_s, 3), buffer.getvalue()))
        return out


def frames_spread(data: bytes, count: int) -> list:
    """`count` frames of a video spread evenly over it, as full-size RGB PIL images (Thumbnails' choice)."""
    with open_container(data) as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"container {container.format.name} has no video stream")
        stream = container.streams.video[0]
        thumbnails = Thumbnails(count, side=1 << 30)  # no downscaling
        try:
            for frame in container.decode(stream):
                if frame.time is not None:
                    thumbnails.feed(frame, frame.time)
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed: {e}") from None
    if not thumbnails.held:
        raise MediaError("empty", "no video frame decoded")
    return [frame.to_image() for _, frame in thumbnails.picks()]


class Reencoder:
    """Frames in, an H.264 + AAC MP4 out, downscaled and thinned as the preset says; frame times kept."""

    @classmethod
    def for_video(cls, preset: VideoPreset, width: int, height: int, fps: float, audio) -> Reencoder | None:
        """An encoder when the video exceeds the preset, else None (published as it came)."""
        too_big = preset.short_side and min(width, height) > preset.short_side
        too_fast = preset.max_fps and fps > preset.max_fps * 1.01
        return cls(preset, width, height, fps, audio) if (too_big or too_fast) else None

    def __init__(self, preset: VideoPreset, width: int, height: int, fps: float, audio):
        scale = min(1.0, (preset.short_side or min(width, height)) / min(width, height))
        # x264's 4:2:0 wants even sides
        self.width, self.height = (max(2, round(side * scale / 2) * 2) for side in (width, height))
        self.fps = min(fps, preset.max_fps or fps)
        self.min_gap_s = (1 / preset.max_fps) * 0.99 if preset.max_fps else 0.0
        self.last_s: float | None = None
        self.frames = 0
        self.scaler = VideoReformatter()
        self.buffer = io.BytesIO()
        # (no +faststart: FFmpeg moves the index by reopening the file by name, which a buffer has not)
        self.out = av.open(self.buffer, mode="w", format="mp4")
        self.video = self.out.add_stream(
            "libx264",
            rate=Fraction(self.fps).limit_denominator(1001),
            options={"crf": str(preset.crf), "preset": "veryfast"},
        )
        self.video.width, self.video.height, self.video.pix_fmt = self.width, self.height, "yuv420p"
        self.video.time_base = OUT_TIME_BASE
        self.audio = self.to_aac = None
        if audio is not None and audio.codec_context.sample_rate:
            rate = audio.codec_context.sample_rate
            layout = "mono" if audio.codec_context.channels == 1 else "stereo"  # surround mixed down
            self.audio = self.out.add_stream("aac", rate=rate, layout=layout)
            self.to_aac = av.AudioResampler(
                format="fltp", layout=layout, rate=rate, frame_size=self.audio.codec_context.frame_size or 1024
            )

    def picture(self, frame: av.VideoFrame, time_s: float) -> None:
        """`time_s` on the source's clock, which the sound's timestamps also follow."""
        if self.last_s is not None and time_s - self.last_s < self.min_gap_s:
            return  # thinned out by max_fps
        self.last_s = time_s
        scaled = self.scaler.reformat(
            frame, width=self.width, height=self.height, format="yuv420p", interpolation="AREA"
        )
        scaled.pts, scaled.time_base = round(time_s / OUT_TIME_BASE), OUT_TIME_BASE
        self.out.mux(self.video.encode(scaled))
        self.frames += 1

    def sound(self, frame: av.AudioFrame) -> None:
        if self.audio is not None:
            for piece in self.to_aac.resample(frame):
                self.out.mux(self.audio.encode(piece))

    def finish(self) -> bytes:
        self.out.mux(self.video.encode(None))
        if self.audio is not None:
            for piece in self.to_aac.resample(None):
                self.out.mux(self.audio.encode(piece))
            self.out.mux(self.audio.encode(None))
        self.out.close()
        return self.buffer.getvalue()
