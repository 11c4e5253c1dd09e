"""The whole analysis ``fer-analyze`` runs: the node's pipeline over sessions, then every output.

A session is a video file, a rosbag2 recording (an image topic) or the
``emotions.jsonl`` written by the ``emotion_recorder`` node.  Frames are run
through exactly the node's core (:class:`fer_ros.pipeline.EmotionPipeline`
built by :func:`fer_ros.pipeline.build_pipeline`); every face of every
processed frame becomes one :class:`~fer_ros.session.data.FaceRow`.
:func:`analyze_and_report` opens every input first (so a bad one fails
before any work), analyses each session and writes per session
``faces.csv``, ``summary.json``, three PNG figures, ``annotated.mp4``
(videos and bags) and ``report.html``; with several sessions each gets its
own folder and the top-level ``report.html`` compares them.

Time axis: ``time_s`` counts seconds from the first frame of the input
(the video position, or the header stamp minus the first one in a bag or
recording).  The pipeline is fed ``time_s``; it only uses differences of
stamps, so this gives the node's results while keeping a video and the
same frames replayed from a bag bit-for-bit comparable.
"""

from __future__ import annotations

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
from fer_ros.session.recording import is_recording, load_recording
from fer_ros.session.sources import expand_inputs, open_source
from fer_ros.session.summary import summarize
from fer_ros.video_io import Frame


#: A progress bar is shown for inputs with at least this many frames.
PROGRESS_MIN_FRAMES = 150


def pipeline_values(params_file: Optional[Path], model: Optional[str]) -> Dict[str, Any]:
    """Pipeline parameter values from a node parameters file and ``--model``.

    :param params_file: YAML of the ``fer: ros__parameters:`` form, or None.
    :param model: ``3class``, ``7class`` or a model path; overrides the file.
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
        float_tuple(dynamic) if dynamic is not None else ())


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
    :return: the session's rows.
    :raises SessionError: when no frame in the selection could be processed.
    """
    session = SessionData(source.description, model, tuple(pipeline.classifier.labels),
                          float(pipeline.config.stability_window_s), selection)
    started = time.perf_counter()
    with progress_bar(source.description, selection, show_progress) as bar:
        for frame in source.frames():
            bar.update(1)
            if selection.past_end(frame.time_s):
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
            if on_frame is not None:
                on_frame(image, result)
    session.processing_s = time.perf_counter() - started
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


def unique_names(paths: Sequence[Path]) -> List[str]:
    """Folder names for the sessions: their stems, numbered where they clash."""
    names: List[str] = []
    for path in paths:
        stem = path.parent.name if is_recording(path) and path.stem == "emotions" \
            else (path.stem if path.is_file() else path.name)
        name, number = stem, 2
        while name in names:
            name, number = f"{stem}_{number}", number + 1
        names.append(name)
    return names


def analyze_and_report(request: AnalysisRequest) -> Tuple[Path, List[SessionOutputs]]:
    """Analyse every session of the request and write all outputs.

    :param request: inputs, output folder and options.
    :return: the top report.html and each session's outputs.
    :raises SessionError, BagError, ModelLoadError, DetectorError, OSError:
        with one line naming the input and the problem.
    """
    values = pipeline_values(request.params_file, request.model)
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
    sources = {path: open_source(path, request.topic) for path in paths
               if path not in request.recordings and not is_recording(path)}
    for source in sources.values():
        check_start(source.description, request.selection)
    names = unique_names(paths)
    single = len(paths) == 1
    request.output.mkdir(parents=True, exist_ok=True)
    results: List[SessionOutputs] = []
    try:
        for path, name in zip(paths, names):
            folder = request.output if single else request.output / name
            folder.mkdir(parents=True, exist_ok=True)
            results.append(_analyze_one(path, name, folder, sources.get(path), values,
                                        request))
    finally:
        for source in sources.values():
            source.close()
    if single:
        return results[0].files[-1], results
    return write_comparison_report(results, request.output), results


def _analyze_one(path: Path, name: str, folder: Path, source: Any,
                 values: Dict[str, Any], request: AnalysisRequest) -> SessionOutputs:
    from fer_ros.pipeline import build_pipeline

    files: List[Path] = []
    if source is None:
        session = load_recording(path, request.selection)
    else:
        pipeline, model = build_pipeline(values)
        writer = None
        if request.annotated_video:
            rate = source.description.frame_rate / request.selection.every
            writer = AnnotatedVideoWriter(folder / "annotated.mp4", rate)
        try:
            session = analyze_source(source, pipeline, model, request.selection, writer,
                                     request.show_progress)
        finally:
            if writer is not None:
                writer.close()
        if writer is not None and writer.frames:
            files.append(writer.path)
    session.description.name = name
    return write_session_outputs(session, folder, files)


def write_session_outputs(session: SessionData, folder: Path,
                          extra_files: Sequence[Path] = ()) -> SessionOutputs:
    """Write faces.csv, summary.json, the figures and report.html of a session.

    :param session: the analysed session.
    :param folder: its output folder (exists).
    :param extra_files: files already written there (the annotated video).
    :return: what was written.
    """
    summary = summarize(session)
    outputs = SessionOutputs(session.description.name, folder, summary)
    outputs.files += [write_faces_csv(session, folder / "faces.csv"),
                      write_summary_json(summary, folder / "summary.json"), *extra_files]
    outputs.figures = {
        "timeline": plot_timeline(session, folder / FIGURE_FILES["timeline"]),
        "valence": plot_valence(session, folder / FIGURE_FILES["valence"]),
        "shares": plot_shares(session, summary, folder / FIGURE_FILES["shares"])}
    outputs.files += list(outputs.figures.values())
    write_session_report(outputs)
    return outputs
