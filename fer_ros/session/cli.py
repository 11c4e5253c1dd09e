r"""``fer-analyze``: per-person emotion report of a recorded session.

    fer-analyze session.mp4 --output report/ --every 2
    fer-analyze recording_bag/ --topic /camera/image_raw --output report/
    fer-analyze --compare pre.mp4 post.mp4 --output comparison/
    fer-analyze --from-jsonl fer_recording/emotions.jsonl --output report/
    fer-analyze session.mp4 -o report/ --people people/ --only child --anonymize
    fer-analyze study/ -o reports/ -j 8 --resume --group-by '(?P<child>P\d+)_(?P<phase>pre|post)'
    fer-analyze study/ --output reports/ --scheduler tcp://10.0.0.5:8786

Inputs are video files, folders of videos, rosbag2 recordings (sqlite3 or
mcap) with a sensor_msgs/Image or CompressedImage topic, or the
emotion_recorder's emotions.jsonl.  Writes faces.csv, summary.json, PNG
figures, annotated.mp4 and a self-contained report.html, per person: faces
are re-identified across losses of any length unless --no-reidentify.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

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
                           epilog="\n".join(__doc__.splitlines()[2:9]))
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
                        help="fer node parameters (YAML '/**/fer: ros__parameters:'), e.g. "
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
    people = parser.add_argument_group(
        "people and privacy",
        "Faces are re-identified: each person keeps one person_id however long they are "
        "away, and the outputs are per person.  Face embeddings stay in memory.")
    people.add_argument("--no-reidentify", action="store_true",
                        help="no person ids: per face track only (no dlib needed)")
    people.add_argument("--people", type=Path, metavar="DIR|FILE",
                        help="known people: one sub-folder of photos per name (e.g. child/, "
                        "therapist/), each photo showing one face; matched people carry the "
                        "name. Or the FILE an earlier run's --save-people wrote: its people "
                        "keep their names and person_<N> ids (e.g. pre and post sessions)")
    people.add_argument("--only", type=only_argument, metavar="NAME[,NAME]",
                        help="restrict the outputs to these people (names, or ids like person_2)")
    people.add_argument("--anonymize", action="store_true",
                        help="pixelate every face in annotated.mp4 (the report has figures only "
                        "and no file holds embeddings either way)")
    people.add_argument("--save-people", type=Path, metavar="FILE",
                        help="write the people's face embeddings (biometric data) to this JSON "
                        "file, private (0600); one session only")
    batch = parser.add_argument_group(
        "batches (several inputs: a study)",
        "Each session gets its own folder; --output also gets study.csv and an overview.")
    batch.add_argument("--jobs", "-j", type=positive_int, metavar="N",
                       help="worker processes (default: the number of cores, as many as fit "
                       "in memory; 1: one session after another in this process)")
    batch.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run the sessions on this Dask cluster instead (needs dask and "
                       "distributed; inputs and --output on a file system all workers share)")
    batch.add_argument("--resume", action="store_true",
                       help="skip sessions whose outputs are complete for the same input "
                       "and settings (continue an interrupted study)")
    batch.add_argument("--group-by", type=group_pattern_argument, metavar="PATTERN",
                       help="regular expression with named groups over the input file names, "
                       "e.g. '(?P<child>P\\d+)_(?P<phase>pre|post)': the last group is "
                       "compared, per value of the others (study_groups.csv)")
    return parser


def positive_int(text: str) -> int:
    """Parse a count of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def only_argument(text: str) -> Tuple[str, ...]:
    """Parse ``--only NAME[,NAME]`` (argparse type)."""
    from fer_ros.session.persons import parse_only

    try:
        return parse_only(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def person_option_conflict(args: argparse.Namespace) -> str:
    """Return why the people and privacy options contradict each other ("" when they do not)."""
    if args.no_reidentify:
        given = [flag for flag, value in (("--people", args.people), ("--only", args.only),
                                          ("--save-people", args.save_people)) if value]
        if given:
            return f"{given[0]} needs re-identification: drop --no-reidentify"
    if args.anonymize and args.save_people:
        return "--save-people writes face embeddings, which --anonymize promises not to"
    return ""


def group_pattern_argument(text: str) -> str:
    """Check a --group-by pattern (argparse type); the text is kept."""
    from fer_ros.session.data import SessionError
    from fer_ros.session.study import group_pattern

    try:
        group_pattern(text)
    except SessionError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if person_option_conflict(args):
        parser.error(person_option_conflict(args))
    from fer_ros.model_files import ModelLoadError
    from fer_ros.session.analysis import AnalysisRequest
    from fer_ros.session.batch import BatchOptions, analyze_all
    from fer_ros.session.data import FrameSelection, SessionError
    from fer_ros.session.persons import PersonOptions
    from fer_ros.session.safe_output import OutputError
    from fer_ros.session.sources import BagError
    from fer_ros.session.workers import RunnerError

    if args.compare and args.inputs:
        print(f"{PROG}: error: give either INPUT... or --compare A B", file=sys.stderr)
        return 2
    try:
        request = AnalysisRequest(
            list(args.compare or args.inputs), args.output,
            FrameSelection(args.start, args.end, args.every), args.topic, args.model,
            args.params_file, args.from_jsonl, bool(args.compare), not args.no_video,
            not args.quiet, not args.no_reidentify, args.people,
            PersonOptions(args.only or (), args.anonymize, args.save_people))
        result = analyze_all(request, BatchOptions(args.jobs, args.scheduler, args.resume,
                                                   args.group_by))
    except (SessionError, BagError, ModelLoadError, OutputError, RunnerError,
            OSError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    for outputs in result.sessions:
        overall = outputs.summary["session"]
        emotion = f"mostly {overall['dominant_emotion']}" if overall["faces"] else "no face"
        if overall.get("persons"):
            emotion = f"{overall['persons']} person(s), {emotion}"
        kept = " (complete from an earlier run: kept)" if outputs.name in result.resumed else ""
        print(f"{outputs.name}: {outputs.summary['frames_processed']} frames, "
              f"{overall['faces']} face(s), {emotion}; written to {outputs.folder}{kept}")
        for warning in outputs.summary.get("warnings", ()):
            print(f"{PROG}: warning: {one_line(warning)}", file=sys.stderr)
    for failure in result.failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    for path in result.study_files:
        if path.suffix == ".csv":
            print(f"study: {path}")
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
