"""``cachewise demo``: the seed guide's stories, measured on a real server against a real SQLite database.

>>> from cachewise.demo import DemoSizes, run_demo
>>> result = run_demo(sizes=DemoSizes.quick())     # CACHEWISE_URL, else the embedded server
>>> result.db_queries_for_1000
1
"""

from .runner import DemoError, DemoResult, DemoSizes, run_demo
from .tables import TITLES

__all__ = ["TITLES", "DemoError", "DemoResult", "DemoSizes", "run_demo"]
