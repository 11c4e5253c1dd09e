"""The whole analysis ``fer-analyze`` runs: the node's pipeline over sessions, then every output.

A session is a video file, a rosbag2 recording (an image topic) or the
``emotions.jsonl`` written by the ``emotion_recorder`` node.  Frames are run
through exactly the node's core (:class:`fer_ros.pipeline.EmotionPipeline`
built by :func:`fer_ros.pipeline.build_pipeline`); every face of every
processed frame becomes one :class:`~fer_ros.session.data.FaceRow`.
:func:`analyze_and_report` opens every input first (so a bad one is known
before any work: it stops a single session or a comparison, while a batch
goes on with the other inputs and reports the bad ones at the end),
analyses each session and writes per session ``faces.csv``,
``summary.json``, three PNG figures, ``report.html`` and, last,
``annotated.mp4`` (videos and bags), each file atomically; with several
sessions each gets its own folder (named safely, inside ``--output``) and
the top-level ``report.html`` compares them.

Time axis: ``time_s`` counts seconds from the first frame of the input
(the video position, or the header stamp minus the first one in a bag or
recording).  The pipeline is fed ``time_s``; it only uses differences of
stamps, so this gives the node's results while keeping a video and the
same frames replayed from a bag bit-for-bit comparable.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fer_ros.image_conversion import ImageConversionError
from fer_ros.parameters import ParamsFileError, read_params_file, validate
from fer_ros.pipeline import EmotionPipeline, FaceResult, FrameResult
from fer_ros.session.annotated_video import AnnotatedVideoWriter
from fer_ros.session.data import (FaceRow, FrameSelection, InputDescription, ProcessedFrame,
                                  SessionData, SessionError, SessionOutputs, SessionSource,
                                  float_tuple)
from fer_ros.session.data_files import write_faces_csv, write_summary_json
from fer_ros.session.figures import FIGURE_FILES, plot_shares, plot_timeline, plot_valence
from fer_ros.session.html import write_comparison_report, write_session_report
from fer_ros.session.persons import (PersonChanges, PersonOptions, check_only, check_people,
                                     check_reidentification, restrict_to_people, save_people)
from fer_ros.session.recording import is_recording, load_recording, recording_name
from fer_ros.session.safe_output import OutputError, inside, remove_stale, session_names
from fer_ros.session.sources import BagError, expand_inputs, open_source
from fer_ros.session.summary import summarize
from fer_ros.video_io import Frame


#: A progress bar is shown for inputs with at least this many frames.
PROGRESS_MIN_FRAMES = 150

#: File name of the annotated video in a session folder.
VIDEO_FILE = "annotated.mp4"

#: Errors that concern one input: in a batch, the other inputs are still analysed.
INPUT_ERRORS = (SessionError, BagError)


def pipeline_values(params_file: Optional[Path], model: Optional[str],
                    reidentify: bool = True, people: Optional[Path] = None) -> Dict[str, Any]:
    """Pipeline parameter values from a node parameters file and the options.

    :param params_file: YAML of the ``/**/fer: ros__parameters:`` form, or None.
    :param model: ``3class``, ``7class`` or a model path; overrides the file.
    :param reidentify: re-identification (``--no-reidentify``: False);
        overrides the file, whose ``reidentify`` is the robot's choice.
    :param people: ``--people DIR``; overrides the file's ``people_dir``.
    :return: parameter name -> value (missing ones take the node's defaults,
        except ``test_time_views``, which is 'model').
    :raises SessionError: for an unreadable file or invalid values.
    """
    # Offline, accuracy matters more than frame rate: every validated view.
    values: Dict[str, Any] = {"test_time_views": "model"}
    if params_file is not None:
        try:
            values.update(read_params_file(params_file))
        except ParamsFileError as error:
            raise SessionError(str(error)) from None
    if model is not None:
        values["model"] = model
    values["reidentify"] = reidentify
    if people is not None:
        values["people_dir"] = str(people)
    problems = validate(values)
    if problems:
        where = f"{params_file}: " if params_file is not None else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SessionError(f"{where}{problems[0]}{more}")
    return values


def face_row(frame: Frame, face: FaceResult) -> FaceRow:
    """Make the row of one face of a pipeline result.

    :param frame: the frame it was found in.
    :param face: the pipeline's result for the face.
    :return: the row.
    """
    dynamic = face.dynamic_probabilities
    x, y, width, height = face.detection.box
    return FaceRow(
        frame.index, frame.time_s, frame.stamp, face.face_id,
        (float(x), float(y), float(width), float(height)), float(face.detection.score),
        face.label, float(face.confidence), face.frame_label,
        float_tuple(face.probabilities), float_tuple(face.smoothed_probabilities),
        float(face.valence), float(face.stability.stability),
        float(face.stability.label_change_rate), float(face.stability.valence_mssd),
        int(face.stability.samples), float(face.tracked_seconds), face.dynamic_label,
        float_tuple(dynamic) if dynamic is not None else (), face.person_id)


FrameCallback = Callable[[np.ndarray, FrameResult], None]


def analyze_source(source: SessionSource, pipeline: EmotionPipeline, model: str,
                   selection: FrameSelection, on_frame: Optional[FrameCallback] = None,
                   show_progress: bool = True) -> SessionData:
    """Run the pipeline over the selected frames of a source.

    :param source: the input.
    :param pipeline: a fresh pipeline (face ids start at ``face_1``).
    :param model: model name for the report.
    :param selection: which frames to process.
    :param on_frame: called with each processed frame and its result
        (e.g. to write the annotated video).
    :param show_progress: show a progress bar with ETA on stderr for long inputs.
    :return: the session's rows; its warnings say when the input ended early.
    :raises SessionError: when no frame in the selection could be processed.
    """
    session = SessionData(source.description, model, tuple(pipeline.classifier.labels),
                          float(pipeline.config.stability_window_s), selection)
    started = time.perf_counter()
    frames_read, reached_end = 0, False
    changes = PersonChanges(pipeline.persons) if pipeline.persons is not None else None
    with progress_bar(source.description, selection, show_progress) as bar:
        for frame in source.frames():
            bar.update(1)
            frames_read += 1
            if selection.past_end(frame.time_s):
                reached_end = True
                break
            if not selection.wants(frame.index, frame.time_s):
                continue
            try:
                image = frame.read_image()
            except ImageConversionError as error:
                session.skipped_frames += 1
                session.skip_reason = session.skip_reason or f"frame {frame.index}: {error}"
                continue
            result = pipeline.process(image, frame.time_s)
            session.frames.append(ProcessedFrame(frame.index, frame.time_s, len(result.faces)))
            session.rows.extend(face_row(frame, face) for face in result.faces)
            if changes is not None:
                changes.observe(result)
            if on_frame is not None:
                on_frame(image, result)
    session.processing_s = time.perf_counter() - started
    if changes is not None:
        changes.settle(session.rows)
    if not reached_end:
        session.note_frames_read(frames_read, getattr(source, "damage", ""))
    session.check_not_empty()
    return session


def progress_bar(description: InputDescription, selection: FrameSelection,
                 enabled: bool) -> Any:
    """Make a tqdm bar over the input's frames (disabled for short inputs).

    :param description: the input (its frame count and rate size the bar).
    :param selection: the range; frames after ``end_s`` are not counted.
    :param enabled: False disables the bar.
    :return: a context manager with ``update(n)``.
    """
    from tqdm import tqdm

    total = description.frame_count or None
    if total and selection.end_s is not None:
        total = min(total, int(math.ceil(selection.end_s * description.frame_rate)) + 1)
    show = enabled and (total is None or total >= PROGRESS_MIN_FRAMES)
    return tqdm(total=total, disable=not show, file=sys.stderr, unit="frame",
                desc=description.name, dynamic_ncols=True, leave=False)


def check_start(description: InputDescription, selection: FrameSelection) -> None:
    """Fail early when ``--start`` lies after the end of an input.

    :param description: the input (its frame count and rate give its length).
    :param selection: the requested range.
    :raises SessionError: when no frame can lie in the range.
    """
    if description.frame_count <= 0 or description.frame_rate <= 0:
        return
    length_s = description.frame_count / description.frame_rate
    if selection.start_s >= length_s:
        raise SessionError(f"{description.path}: --start {selection.start_s:g} s is after "
                           f"the end of the input ({length_s:.1f} s long)")


@dataclass
class AnalysisRequest:
    """What ``fer-analyze`` was asked to do.

    :param inputs: videos, folders of videos, rosbag2 recordings, emotions.jsonl files.
    :param output: the output folder.
    :param selection: which frames to process.
    :param topic: the image topic of rosbag2 inputs.
    :param model: ``3class``, ``7class`` or a model path (overrides the params file).
    :param params_file: fer node parameters YAML.
    :param recordings: emotions.jsonl files analysed without a model.
    :param compare: the inputs are exactly two sessions to compare.
    :param annotated_video: write annotated.mp4.
    :param show_progress: progress bars on stderr.
    :param reidentify: person ids across face tracks (``--no-reidentify``: False).
    :param people: folder of known people's photos (``--people``).
    :param persons: ``--only``, ``--anonymize``, ``--save-people``.
    """

    inputs: List[Path]
    output: Path
    selection: FrameSelection = field(default_factory=FrameSelection)
    topic: Optional[str] = None
    model: Optional[str] = None
    params_file: Optional[Path] = None
    recordings: List[Path] = field(default_factory=list)
    compare: bool = False
    annotated_video: bool = True
    show_progress: bool = True
    reidentify: bool = True
    people: Optional[Path] = None
    persons: PersonOptions = field(default_factory=PersonOptions)


@dataclass
class AnalysisResult:
    """What ``fer-analyze`` wrote.

    :param report: the top report.html (None when no session could be analysed).
    :param sessions: each analysed session's outputs.
    :param failures: one line per input of a batch that could not be analysed.
    """

    report: Optional[Path]
    sessions: List[SessionOutputs] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)


def input_name(path: Path) -> str:
    """Name the session of an input: file stem, folder name, or a recording's folder."""
    if is_recording(path):
        return recording_name(path)
    return path.stem if path.is_file() else path.resolve().name


def unique_names(paths: Sequence[Path]) -> List[str]:
    """Folder names for the sessions: safe names of their inputs, numbered where they clash."""
    return session_names(input_name(path) for path in paths)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def prepare_inputs(request: AnalysisRequest, people: bool = True
                   ) -> Tuple[Dict[str, Any], List[Path], bool]:
    """Check the request and list its sessions.

    :param request: inputs, output folder and options.
    :param people: enroll the known people once to check their photos
        (False: the caller has done so).
    :return: ``(pipeline values, one path per session, whether it is a batch)``;
        a batch is several sessions without ``--compare``.
    :raises SessionError: for a bad parameter, input, output folder or
        photo of a known person.
    """
    values = pipeline_values(request.params_file, request.model, request.reidentify,
                             request.people)
    paths = request.recordings + expand_inputs(request.inputs)
    if not paths:
        raise SessionError("no input given")
    for path in request.recordings:
        if not path.is_file():
            raise SessionError(f"{path}: no such file")
    if request.compare and len(paths) != 2:
        raise SessionError(f"--compare needs exactly two sessions, got {len(paths)}")
    if request.output.exists() and not request.output.is_dir():
        raise SessionError(f"{request.output}: exists and is not a folder")
    with_model = [path for path in paths
                  if path not in request.recordings and not is_recording(path)]
    if request.persons.save_people is not None and (len(paths) != 1 or not with_model):
        raise SessionError("--save-people wants one video or rosbag2 input (each session "
                           "has its own people)")
    if with_model and request.reidentify:
        check_reidentification()
        if people:
            enrolled = check_people(values)
            if len(with_model) == len(paths):  # recordings name whom they recorded
                check_only(request.persons.only, enrolled, values.get("people_dir", ""))
    return values, paths, len(paths) > 1 and not request.compare


def analyze_and_report(request: AnalysisRequest, checked: bool = False) -> AnalysisResult:
    """Analyse every session of the request and write all outputs.

    One input, or the two of ``--compare``: any problem stops the run.  A
    batch (several inputs): an input that cannot be opened or analysed is
    reported in ``failures`` and the others are analysed, in turn, in this
    process (``fer-analyze`` runs batches through
    :func:`fer_ros.session.batch.analyze_all`: workers, resume, study overview).

    :param request: inputs, output folder and options.
    :param checked: the known people's photos were checked already.
    :return: the top report.html, each session's outputs and the failures.
    :raises SessionError, BagError, ModelLoadError, DetectorError, OutputError:
        with one line naming the input or file and the problem.
    """
    values, paths, batch = prepare_inputs(request, people=not checked)
    failures: Dict[Path, str] = {}
    sources: Dict[Path, Any] = {}
    result = AnalysisResult(None)
    try:
        for path in paths:
            if path in request.recordings or is_recording(path):
                continue
            try:
                sources[path] = open_source(path, request.topic)
                check_start(sources[path].description, request.selection)
            except INPUT_ERRORS as error:
                if not batch:
                    raise
                failures[path] = _one_line(error)
        request.output.mkdir(parents=True, exist_ok=True)
        for path, name in zip(paths, unique_names(paths)):
            if path in failures:
                continue
            folder = request.output if len(paths) == 1 else \
                inside(request.output, request.output / name)
            try:
                result.sessions.append(_analyze_one(path, name, folder, sources.get(path),
                                                    values, request))
            except INPUT_ERRORS as error:
                if not batch:
                    raise
                failures[path] = _one_line(error)
    finally:
        for source in sources.values():
            source.close()
    result.failures = [failures[path] for path in paths if path in failures]
    if len(paths) == 1:
        result.report = result.sessions[0].files[-1]
    elif result.sessions:
        result.report = write_comparison_report(result.sessions, request.output)
    return result


def _analyze_one(path: Path, name: str, folder: Path, source: Any,
                 values: Dict[str, Any], request: AnalysisRequest) -> SessionOutputs:
    """Analyse one session and write its outputs (nothing is left half-written)."""
    from fer_ros.pipeline import build_pipeline

    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    writer: Optional[AnnotatedVideoWriter] = None
    persons = request.persons
    try:
        if source is None:
            session = load_recording(path, request.selection)
        else:
            pipeline, model = build_pipeline(values)
            if request.annotated_video:
                rate = source.description.frame_rate / request.selection.every
                writer = AnnotatedVideoWriter(folder / VIDEO_FILE, rate, persons.anonymize,
                                              persons.only)
            session = analyze_source(source, pipeline, model, request.selection, writer,
                                     request.show_progress)
            if persons.save_people is not None:
                save_people(pipeline.persons, persons.save_people)
        session.description.name = name
        session.anonymized = persons.anonymize
        restrict_to_people(session, persons.only)
        return write_session_outputs(session, folder, writer)
    except BaseException:
        if writer is not None:
            writer.abort()
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_session_outputs(session: SessionData, folder: Path,
                          video: Optional[AnnotatedVideoWriter] = None) -> SessionOutputs:
    """Write faces.csv, summary.json, the figures, report.html, then the annotated video.

    Each file is written atomically, the small ones first; the video was
    streamed into a temporary file during the analysis and only gets its
    name at the end.  When the video could not be written completely (a
    full disk), it is deleted, which frees its space, the other outputs are
    still written, and then its error is raised.  An ``annotated.mp4`` of
    an earlier run that this run does not replace is removed.

    :param session: the analysed session.
    :param folder: its output folder (exists).
    :param video: the annotated video being written, or None.
    :return: what was written.
    :raises OutputError: naming the file that could not be written.
    """
    summary = summarize(session)
    outputs = SessionOutputs(session.description.name, folder, summary)
    video_error: Optional[OutputError] = None
    if video is not None:
        try:
            video.finish()
        except OutputError as error:
            video_error = error
    with_video = video is not None and video_error is None and video.frames > 0
    if not with_video:
        remove_stale(folder, [VIDEO_FILE])
    outputs.files += [write_faces_csv(session, folder / "faces.csv"),
                      write_summary_json(summary, folder / "summary.json")]
    if with_video:
        outputs.files.append(folder / VIDEO_FILE)  # linked from the report, renamed last
    outputs.figures = {
        "timeline": plot_timeline(session, folder / FIGURE_FILES["timeline"]),
        "valence": plot_valence(session, folder / FIGURE_FILES["valence"]),
        "shares": plot_shares(session, summary, folder / FIGURE_FILES["shares"])}
    outputs.files += list(outputs.figures.values())
    write_session_report(outputs)
    if video_error is not None:
        raise video_error
    if video is not None:
        video.commit()
    return outputs
