"""SRT and WebVTT subtitles from a transcript's timed segments.

Segments are timed against the job's audio; `offset` (the start of the window the user cut)
shifts them back onto the source, so the subtitles line up with the original video.
"""
from __future__ import annotations

import re
from typing import Iterable

MIN_CUE_SECONDS = 0.2  # a cue shorter than this flashes by unread


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def cues(segments: Iterable[tuple[float, float, str]],
         offset: float = 0.0) -> list[tuple[float, float, str]]:
    """Cues in time order, shifted by `offset`, each at least MIN_CUE_SECONDS long, none
    starting before the one before it, text on one line (a blank line would end a cue)."""
    result: list[tuple[float, float, str]] = []
    previous_start = 0.0
    for start, end, text in segments:
        text = re.sub(r"\s+", " ", text).strip()
        if not text:
            continue
        start = max(float(start) + offset, previous_start)
        end = max(float(end) + offset, start + MIN_CUE_SECONDS)
        result.append((start, end, text))
        previous_start = start
    return result


def to_srt(segments: Iterable[tuple[float, float, str]], offset: float = 0.0) -> str:
    blocks = [f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
              for number, (start, end, text) in enumerate(cues(segments, offset), 1)]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[tuple[float, float, str]], offset: float = 0.0) -> str:
    def escape(text: str) -> str:  # WebVTT cue text is markup; "-->" would end the timing
        return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{escape(text)}\n"
              for start, end, text in cues(segments, offset)]
    return "WEBVTT\n\n" + "\n".join(blocks)


# The subtitle formats a download can ask for, made from the stored segments.
SUBTITLE_FORMATS = {"srt": to_srt, "vtt": to_vtt}
