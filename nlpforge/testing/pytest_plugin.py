"""pytest plugin for task-plugin authors, registered through the ``pytest11`` entry point.

It must stay importable without torch: it is loaded by every pytest run in an environment
where nlpforge is installed.
"""
