import os, pytest

# The tests that read the built site (and so wait for the docs build, a few minutes on 2 cores): one group, run first
# on one pytest-xdist worker, so that the build starts at once and the other workers run everything else meanwhile.
SITE = ('test_docs_api.py', 'test_docs_browser.py', 'test_notebooks_kernel.py')

def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` run only with KDBOOK_SLOW=1 (`make test-slow`); xdist groups: a module each, the site's first"
    if os.environ.get('KDBOOK_SLOW') != '1':
        skip = pytest.mark.skip(reason='slow: run with KDBOOK_SLOW=1 (make test-slow)')
        for item in items:
            if 'slow' in item.keywords: item.add_marker(skip)
    for item in items:  # read by `--dist loadgroup`: a module's fixtures are made on one worker only
        item.add_marker(pytest.mark.xdist_group('site' if item.path.name in SITE else item.path.name))
    items.sort(key=lambda item: item.path.name not in SITE)  # stable: the order inside each module is kept
