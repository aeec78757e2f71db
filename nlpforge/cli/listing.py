"""nlpforge tasks / nlpforge plugins: what is installed, without importing torch."""

from __future__ import annotations

import json

import click

from nlpforge.plugins import get_plugin_manager


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks(as_json: bool) -> None:
    """List the tasks that installed plugins provide."""
    manager = get_plugin_manager()
    rows = []
    for task_id, entry in sorted(manager.tasks.items()):
        task = entry.task
        rows.append({
            "id": task_id, "version": task.version, "family": task.family.value,
            "description": task.description, "plugin": entry.plugin.name,
            "distribution": entry.plugin.distribution,
            "options": {o.name: o.default for o in task.options},
            "train_fields": [f.name for f in task.train_fields],
            "request_fields": [f.name for f in task.request_fields],
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No tasks installed. See 'nlpforge plugins'.")
        return
    width = max(len(r["id"]) for r in rows)
    fam = max(len(r["family"]) for r in rows)
    for r in rows:
        click.echo(f"{r['id']:<{width}}  {r['family']:<{fam}}  {r['description']}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List plugin distributions, their tasks and commands, and load errors."""
    manager = get_plugin_manager()
    root = click.get_current_context().find_root().command
    if hasattr(root, "list_commands"):  # adds plugin commands so they can be listed
        root.list_commands(click.get_current_context())
    rows = [p.as_dict() for p in manager.plugins]
    conflicts = {task: [p.describe() for p in owners] for task, owners in manager.conflicts.items()}
    if as_json:
        click.echo(json.dumps({"plugins": rows, "conflicts": conflicts}, indent=2))
        return
    for p in rows:
        line = f"{p['name']} ({p['distribution']} {p['version']}): {p['status']}"
        if p["tasks"]:
            line += f"; tasks: {', '.join(p['tasks'])}"
        if p["commands"]:
            line += f"; commands: {', '.join(p['commands'])}"
        click.echo(line)
        if p["error"]:
            click.echo(f"    error: {p['error']}")
    for task, owners in conflicts.items():
        click.echo(f"conflict: task '{task}' registered by {' and '.join(owners)}")
