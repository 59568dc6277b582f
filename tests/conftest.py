import os, pytest

def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` run only with KDBOOK_SLOW=1 (`make test-slow`)"
    if os.environ.get('KDBOOK_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: run with KDBOOK_SLOW=1 (make test-slow)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
