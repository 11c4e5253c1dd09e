"""``fer-analyze``: per-person emotion report of a recorded session.

    fer-analyze session.mp4 --output report/ --every 2
    fer-analyze recording_bag/ --topic /camera/image_raw --output report/
    fer-analyze --compare pre.mp4 post.mp4 --output comparison/
    fer-analyze --from-jsonl fer_recording/emotions.jsonl --output report/

Inputs are video files, folders of videos, rosbag2 recordings (sqlite3 or
mcap) with a sensor_msgs/Image or CompressedImage topic, or the
emotion_recorder's emotions.jsonl.  Writes faces.csv, summary.json, PNG
figures, annotated.mp4 and a self-contained report.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

PROG = "fer-analyze"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        """Print ``fer-analyze: error: ...`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line interface."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.splitlines()[2:6]))
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help="video, folder of videos, rosbag2 recording or emotions.jsonl")
    parser.add_argument("--output", "-o", required=True, type=Path, help="output folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="two sessions (e.g. before and after training) to compare")
    parser.add_argument("--from-jsonl", action="append", type=Path, default=[],
                        metavar="FILE", help="emotion_recorder output to report on "
                        "(no model is run; repeatable)")
    parser.add_argument("--topic", help="image topic of rosbag2 inputs (needed when a "
                        "recording has several)")
    parser.add_argument("--model", help="static model: 3class, 7class or a "
                        ".tflite/.keras path (overrides --params-file)")
    parser.add_argument("--params-file", type=Path,
                        help="fer node parameters (YAML 'fer: ros__parameters:'), e.g. "
                        "config/fer.yaml")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="process every Nth frame (default 1: all)")
    parser.add_argument("--start", type=float, default=0.0, metavar="S",
                        help="first second to analyse, from the start of the input")
    parser.add_argument("--end", type=float, default=None, metavar="S",
                        help="last second to analyse (default: to the end)")
    parser.add_argument("--no-video", action="store_true",
                        help="do not write annotated.mp4")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    from fer_ros.model_files import ModelLoadError
    from fer_ros.session.analysis import AnalysisRequest, analyze_and_report
    from fer_ros.session.data import FrameSelection, SessionError
    from fer_ros.session.safe_output import OutputError
    from fer_ros.session.sources import BagError

    if args.compare and args.inputs:
        print(f"{PROG}: error: give either INPUT... or --compare A B", file=sys.stderr)
        return 2
    try:
        request = AnalysisRequest(
            list(args.compare or args.inputs), args.output,
            FrameSelection(args.start, args.end, args.every), args.topic, args.model,
            args.params_file, args.from_jsonl, bool(args.compare), not args.no_video,
            not args.quiet)
        result = analyze_and_report(request)
    except (SessionError, BagError, ModelLoadError, OutputError, OSError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    for outputs in result.sessions:
        overall = outputs.summary["session"]
        emotion = f"mostly {overall['dominant_emotion']}" if overall["faces"] else "no face"
        print(f"{outputs.name}: {outputs.summary['frames_processed']} frames, "
              f"{overall['faces']} face(s), {emotion}; written to {outputs.folder}")
        for warning in outputs.summary.get("warnings", ()):
            print(f"{PROG}: warning: {one_line(warning)}", file=sys.stderr)
    for failure in result.failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    if result.report is not None:
        print(f"report: {result.report}")
    if result.failures:
        print(f"{PROG}: {len(result.failures)} of {len(result.failures) + len(result.sessions)}"
              " inputs could not be analysed", file=sys.stderr)
        return 1
    return 0


def one_line(message: object) -> str:
    """Return a message (or exception) as one line."""
    return " ".join(str(message).split()) or type(message).__name__


if __name__ == "__main__":
    sys.exit(main())
