"""The verl tests run where verl is installed: the verl environment made by ``bash .ci/verl``
(elsewhere each module skips at collection, naming that command).

(The folder is not called ``tests/verl``: pytest puts ``tests/`` on ``sys.path``, where such a
folder would be found as a namespace package named ``verl``.)
"""


def pytest_configure(config):
    # verl's engine registry warns for every optional backend it lacks (torchtitan, megatron, ...).
    for line in ("ignore::UserWarning:verl.workers.engine", "ignore::DeprecationWarning", "ignore::FutureWarning"):
        config.addinivalue_line("filterwarnings", line)
