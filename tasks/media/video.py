"""Video with PyAV (FFmpeg): decode every video frame and the audio track in one demux pass."""

from __future__ import annotations

from dataclasses import dataclass

import av

from . import MediaError
from .audio import TRUNCATION_TOLERANCE, declared_seconds, open_container

# FFmpeg demuxer name -> the extension we publish under (its matroska demuxer also reads WebM,
# and .mkv names both correctly)
_EXTENSIONS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi"}


@dataclass
class DecodedVideo:
    data: bytes
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


def decode_video(data: bytes) -> DecodedVideo:
    with open_container(data) as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"container {container.format.name} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        fps = float(video.average_rate or video.guessed_rate or 0)
        declared_frames = video.frames or 0
        ext = _EXTENSIONS.get(container.format.name)
        declared_s = declared_seconds(container, video)
        if ext is None:
            raise MediaError("unsupported_container", container.format.name)

        frames, audio_samples = 0, 0
        width = height = 0
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if packet.stream is video:
                        frames += 1
                        width, height = frame.width, frame.height
                    else:
                        audio_samples += frame.samples
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {frames} frames: {e}") from None

        if frames == 0 or fps <= 0:
            raise MediaError("empty", "no video frames decoded")
        if declared_frames and frames < TRUNCATION_TOLERANCE * declared_frames:
            raise MediaError("truncated", f"decoded {frames} of {declared_frames} declared frames")
        if declared_s and frames / fps < TRUNCATION_TOLERANCE * declared_s - 1 / fps:
            raise MediaError("truncated", f"decoded {frames / fps:.3f}s of a declared {declared_s:.3f}s")
        rate = audio.codec_context.sample_rate if audio is not None else None
        return DecodedVideo(
            data=data,
            ext=ext,
            width=width,
            height=height,
            fps=fps,
            num_frames=frames,
            duration_s=frames / fps,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            sample_rate=rate,
            audio_duration_s=(audio_samples / rate) if audio is not None and rate else None,
        )
