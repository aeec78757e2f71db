"""nlpforge new-plugin: start a task plugin distribution (no torch)."""

from __future__ import annotations

import click


@click.command(name="new-plugin")
@click.argument("name")
@click.option("--output", "-o", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory to create the project in (as OUTPUT/nlpforge-NAME).")
@click.option("--description", default=None, help="One line describing the task.")
@click.option("--overwrite", is_flag=True, help="Replace an existing project directory.")
def new_plugin(name: str, output: str, description: str | None, overwrite: bool) -> None:
    """Create a ready-to-install task plugin project called nlpforge-NAME.

    \b
    It holds a pyproject.toml with the nlpforge entry point, a working task
    (a text classifier to adapt), tests that train, export and predict it
    with nlpforge.testing, example data and a README:
      nlpforge new-plugin review-rating --output .
      pip install -e ./nlpforge-review-rating
      nlpforge tasks
      pytest ./nlpforge-review-rating
    """
    from nlpforge.scaffold import create_plugin, names_for

    target = create_plugin(name, output, description, overwrite)
    names = names_for(name)
    click.echo(f"Created {names['dist']} (task '{names['task_id']}', module "
               f"{names['module']}) in {target}")
    click.echo("Next:")
    click.echo(f"  pip install -e '{target}[test]'")
    click.echo(f"  nlpforge tasks            # lists {names['task_id']}")
    click.echo(f"  pytest {target}")
