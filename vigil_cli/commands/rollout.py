"""``vigil rollout``: canary rollouts decided by Prometheus (:mod:`rollout.controller`).

* ``vigil rollout fraud --version V [--steps 10,25,50,100] [--interval 60s] [--threshold 3]
  [--target local|kserve|helm] [--shadow]`` — roll version V out and wait for the outcome
  (exit 0 promoted, 1 rolled back); run again after a crash to resume;
* ``vigil rollout status|history [MODEL]`` — the current rollout, its recorded events;
* ``vigil rollout abort|promote [MODEL]`` — an operator's decision, carried out by the running
  controller (or here, when none runs);
* ``vigil rollout stack up|down|status`` — the local rollout stack (:mod:`rollout.local`).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from rollout import TARGETS
from vigil_cli.cli import settings_from


class RolloutGroup(click.Group):
    """``vigil rollout MODEL ...`` starts a rollout; other first words are subcommands."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return args[0], self.commands["start"], args
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "MODEL --version V [OPTIONS] | COMMAND [ARGS]")


class StartCommand(click.Command):
    """The hidden ``start`` command, whose usage reads as it is typed: ``vigil rollout MODEL``."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        parent = ctx.parent.command_path if ctx.parent else "rollout"
        formatter.write_usage(parent, "MODEL --version V [OPTIONS]")


@click.group(cls=RolloutGroup)
def rollout() -> None:
    """Canary rollouts that decide by themselves (Prometheus analysis, automatic rollback).

    vigil rollout MODEL --version V [--steps 10,25,50,100] [--interval 60s] [--threshold 3]
    [--target local|kserve|helm] [--shadow]
    """


def _say(message: str) -> None:
    click.echo(message)


@rollout.command("start", cls=StartCommand, hidden=True)
@click.argument("model_name")
@click.option("--version", "version", type=click.IntRange(min=1), required=True,
              help="Registry version to roll out.")
@click.option("--steps", default=None, metavar="P1,P2,...",
              help="Canary traffic percentages (default: rollout.steps, 10,25,50,100).")
@click.option("--interval", default=None, metavar="DURATION",
              help="Traffic time per step before its analysis, e.g. 60s, 2m (default: "
              "rollout.interval_s).")
@click.option("--threshold", type=click.IntRange(min=1), default=None,
              help="Failed analyses that roll back (default: rollout.threshold, 3).")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Where the traffic split lives (default: rollout.target, local).")
@click.option("--shadow", is_flag=True,
              help="First mirror traffic to the canary (clients never see its answers).")
@click.pass_context
def start(ctx: click.Context, model_name: str, version: int, steps: str | None,
          interval: str | None, threshold: int | None, target: str | None,
          shadow: bool) -> None:
    """Roll VERSION of MODEL out step by step; promote or roll back by the analysis."""
    from rollout.controller import RolloutRequest, parse_duration, parse_steps, rollout
    from vigil.settings import Settings

    settings: Settings = settings_from(ctx)
    if model_name != settings.registry.model_name:
        settings = settings.model_copy(update={"registry": settings.registry.model_copy(
            update={"model_name": model_name})})
    request = RolloutRequest.from_settings(
        settings, version,
        steps=parse_steps(steps) if steps is not None else None,
        interval_s=parse_duration(interval) if interval is not None else None,
        threshold=threshold, target=target, shadow=shadow,
    )
    final = rollout(settings, request, _say)
    sys.exit(0 if final.phase == "promoted" else 1)


def _model(ctx: click.Context, model_name: str | None) -> str:
    return model_name or str(settings_from(ctx).registry.model_name)


@rollout.command()
@click.argument("model_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@click.pass_context
def status(ctx: click.Context, model_name: str | None, as_json: bool) -> None:
    """The current (or last) rollout of MODEL (default: the configured model)."""
    from rollout.controller import status as rollout_status

    current = rollout_status(settings_from(ctx), _model(ctx, model_name))
    if as_json:
        click.echo(json.dumps(current, indent=2, default=str))
        return
    click.echo(format_status(current))


@rollout.command()
@click.argument("model_name", required=False)
@click.option("--all", "everything", is_flag=True, help="Events of every rollout, not only "
              "the current (or last) one.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def history(ctx: click.Context, model_name: str | None, everything: bool,
            as_json: bool) -> None:
    """Recorded events: traffic changes, analyses with their values, the outcome."""
    from rollout.controller import history as rollout_history

    events = rollout_history(settings_from(ctx), _model(ctx, model_name), everything=everything)
    if not events:
        click.echo("no rollout recorded")
        return
    for event in events:
        click.echo(json.dumps(event, sort_keys=True, default=str) if as_json
                   else format_event(event))


@rollout.command()
@click.argument("model_name", required=False)
@click.pass_context
def abort(ctx: click.Context, model_name: str | None) -> None:
    """Roll the current rollout back now (the champion does not change)."""
    from rollout.controller import request_action

    final = request_action(settings_from(ctx), "abort", _say, model_name=_model(ctx, model_name))
    click.echo(f"{final.id}: {final.phase} ({final.reason})")


@rollout.command()
@click.argument("model_name", required=False)
@click.pass_context
def promote(ctx: click.Context, model_name: str | None) -> None:
    """Promote the current rollout's candidate now, without further analysis."""
    from rollout.controller import request_action

    final = request_action(settings_from(ctx), "promote", _say,
                           model_name=_model(ctx, model_name))
    click.echo(f"{final.id}: {final.phase} ({final.reason})")


@rollout.group()
def stack() -> None:
    """The local rollout stack: two model servers behind HAProxy, Prometheus, Pushgateway."""


@stack.command("up")
@click.pass_context
def stack_up(ctx: click.Context) -> None:
    """Start the stack serving the champion (rollout.local.* settings: ports, scrape)."""
    from rollout.local import stack_up as up

    started = up(settings_from(ctx), _say)
    click.echo(f"local rollout stack up: clients call {started.url}, Prometheus "
               f"{started.prometheus_url}, Pushgateway {started.pushgateway_url}; version "
               f"{started.primary_version()} serves")


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop every process of the stack (by PID)."""
    from rollout.controller import store_for
    from rollout.local import stack_down as down

    settings = settings_from(ctx)
    if store_for(settings).controller_running():
        raise click.ClickException("a rollout controller is running: `vigil rollout abort` "
                                   "first")
    stopped = down(settings, _say)
    click.echo(f"stopped {len(stopped)} process(es)" if stopped else "nothing was running")


@stack.command("status")
@click.pass_context
def stack_status(ctx: click.Context) -> None:
    """The stack's processes, ports and weights."""
    from rollout.local import load_stack

    current = load_stack(settings_from(ctx))
    if current is None:
        click.echo("the local rollout stack is not running")
        return
    click.echo(f"clients: {current.url}  Prometheus: {current.prometheus_url}  Pushgateway: "
               f"{current.pushgateway_url}  primary slot: {current.primary_slot}")
    for name, proc in current.processes().items():
        click.echo(f"  {name:28} pid {proc.pid:<8} {'running' if proc.alive() else 'DEAD'}")
    if current.running():
        click.echo(f"  HAProxy weights: {current.admin.weights()}")


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "?"
    return datetime.fromtimestamp(float(epoch), tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_status(current: dict[str, Any]) -> str:
    state = current.get("rollout")
    if state is None:
        return f"no rollout of {current['model_name']} recorded"
    controller = (f"controller pid {current['controller_pid']}" if current["controller_running"]
                  else "no controller running")
    lines = [
        f"rollout {state['id']}: {state['phase']} ({controller})",
        f"  version {state['version']} against version {state['primary_version']} on the "
        f"{state['target'].get('kind')} target; traffic {state['traffic_percent']}%",
        f"  step {state['step'] + 1}/{len(state['steps'])} of {state['steps']}, interval "
        f"{state['interval_s']:g} s; failed analyses {state['failed_analyses']}/"
        f"{state['threshold']}; started {_when(state['started_at'])}",
    ]
    if state.get("reason"):
        lines.append(f"  reason: {state['reason']}")
    if current.get("unattended"):
        lines.append("  UNATTENDED: the controller stopped mid-rollout; resume with `vigil "
                     f"rollout {state['model_name']} --version {state['version']}` or roll "
                     "back with `vigil rollout abort`")
    last = state.get("last_analysis")
    if last:
        lines.append(f"  last analysis ({'passed' if last['passed'] else 'failed'}):")
        lines += [f"    {'ok  ' if c['passed'] else 'FAIL'} {c['name']:18} {c['detail']}"
                  for c in last["checks"]]
    return "\n".join(lines)


def format_event(event: dict[str, Any]) -> str:
    return (f"{_when(event.get('time'))}  {event.get('event', '?'):12} "
            f"{event.get('traffic_percent', 0):>3}%  {event.get('phase', '?'):12} "
            f"{event.get('message', '')}")
