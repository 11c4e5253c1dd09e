"""Declare a node's parameters from its table in :mod:`fer_ros.parameters`.

Every parameter is declared once, with its description, range (integer or
floating point), allowed values and whether it can change at run time, so
``ros2 param describe`` shows what the README says.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node

from fer_ros.parameters import ParameterSpec, check, validate


def descriptor_of(spec: ParameterSpec) -> ParameterDescriptor:
    """Return the ROS parameter descriptor of one table entry."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float(high), step=0.0)]
        else:
            descriptor.integer_range = [IntegerRange(
                from_value=int(low), to_value=int(high), step=1)]
    if spec.choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    return descriptor


def declare_parameters(node: Node, table: Sequence[ParameterSpec],
                       check_values: bool = True) -> Dict[str, Any]:
    """Declare every parameter of ``table`` on ``node`` and return their values.

    :param check_values: check the values given at start-up (a lifecycle
        node checks them when it is configured instead).
    :raises ValueError: with every problem of the values (wrong choice,
        empty where a value is needed), in one line.
    """
    for spec in table:
        node.declare_parameter(spec.name, spec.default, descriptor_of(spec))
    values = {spec.name: node.get_parameter(spec.name).value for spec in table}
    problems = validate(values, table) if check_values else []
    if problems:
        raise ValueError("; ".join(problems))
    return values


def accept_changes(parameters: Sequence[Any], table: Sequence[ParameterSpec],
                   values: Dict[str, Any]) -> SetParametersResult:
    """Check run-time changes against ``table``; store them in ``values`` if all are valid.

    For a node's set-parameters callback: a change that breaks a range or a
    choice is refused with the reason, and then nothing changes.
    Parameters outside the table (``use_sim_time``, ``qos_overrides.*``) are
    ROS's own: accepted, not stored.
    """
    specs = {spec.name: spec for spec in table}
    for parameter in parameters:
        spec = specs.get(parameter.name)
        problem = check(spec, parameter.value) if spec else None
        if problem:
            return SetParametersResult(successful=False, reason=problem)
    for parameter in parameters:
        if parameter.name in specs:
            values[parameter.name] = parameter.value
    return SetParametersResult(successful=True)
