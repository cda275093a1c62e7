"""Ray's forwarded worker lines, routed into the running quiet job's log (core/job_output.py).

Ray prints the lines its workers write on the driver's terminal (`log_to_driver`); a quiet job keeps
them in its log file instead, prefixed `(<actor or task> pid=N)`. Installed by `ray_setup.init_ray`.
"""

from __future__ import annotations

from typing import Any

from onegen.core.job_output import active_log_file

_ray_printer: list[Any] = []  # Ray's own worker-line printer, once replaced


def route_ray_worker_logs() -> None:
    """Send the worker lines Ray forwards to this driver into the running job's log (Ray's printer
    when no quiet job runs). Idempotent; call after `ray.init(log_to_driver=True)`."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    if _ray_printer:
        return
    printers = [handler for name, handler in dispatcher.handlers if name == "ray_print_logs"]
    if not printers:  # log_to_driver=False: nothing is forwarded
        return
    _ray_printer.append(printers[0])
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", _write_worker_lines)


def _write_worker_lines(data: dict) -> None:
    """A dispatcher handler: one batch of forwarded worker lines into the log (or Ray's printer)."""
    log = active_log_file()
    if log is None:
        _ray_printer[0](data)
        return
    lines = data.get("lines", [])
    if data.get("pid") == "autoscaler":  # Ray's periodic status dumps: keep only its events, as Ray prints them
        from ray._private.worker import filter_autoscaler_events

        lines = list(filter_autoscaler_events(lines))
    who = data.get("actor_name") or data.get("task_name") or "worker"
    prefix = f"({who} pid={data.get('pid')}) "
    log.write("".join(f"{prefix}{line}\n" for line in lines))
