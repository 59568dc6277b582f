"The `kdbook` console script end to end, as a user runs it: exit codes, messages, settings.ini, output files."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
KDBOOK = Path(sys.executable).with_name('kdbook')

def run(*args, cwd=None):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([str(KDBOOK), *args], cwd=cwd or ROOT, capture_output=True, text=True, env=env, timeout=600)

def test_console_script_installed():
    assert KDBOOK.exists(), f'{KDBOOK} missing: the package is not installed with its console script'
    r = run('--help')
    assert r.returncode == 0 and '--dataset' in r.stdout and 'mnist1d' in r.stdout

def test_unknown_dataset_lists_valid_names():
    r = run('demo', '--dataset', 'nope')
    assert r.returncode != 0
    for name in ('mnist1d', 'digits', 'diabetes'): assert name in r.stderr

def test_unknown_device_is_a_clear_error():
    r = run('demo', '--dataset', 'digits', '--epochs', '1', '--device', 'nope', '--quiet')
    assert r.returncode == 1
    assert "Unknown device 'nope'" in r.stderr and 'Traceback' not in r.stderr

def test_demo_writes_table_and_files(tmp_path):
    r = run('demo', '--dataset', 'digits', '--epochs', '1', '--quiet', '--out', str(tmp_path/'out'))
    assert r.returncode == 0, r.stderr
    assert 'teacher' in r.stdout and 'student, scratch' in r.stdout and 'accuracy' in r.stdout
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    assert [row['model'] for row in res['results']][:2] == ['teacher', 'student, scratch']
    assert res['settings']['dataset'] == 'digits'
    assert (tmp_path/'out'/'results.png').stat().st_size > 1000
    assert (tmp_path/'out'/'results.csv').read_text().startswith('model,params,accuracy,agreement,epochs,train_s')

def test_settings_ini_changes_the_demo(tmp_path):
    "Editing settings.ini (found in the working directory) changes what `kdbook demo` does, without code changes"
    ini = (ROOT/'settings.ini').read_text()
    ini = ini.replace('dataset = mnist1d', 'dataset = diabetes').replace('epochs = 40', 'epochs = 2')
    assert 'dataset = diabetes' in ini and 'epochs = 2' in ini, 'the project settings.ini changed its format'
    (tmp_path/'settings.ini').write_text(ini)
    r = run('demo', '--quiet', '--out', 'out', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    assert res['settings']['dataset'] == 'diabetes' and res['settings']['epochs'] == 2
    assert all(row['epochs'] == 2 and 'rmse' in row for row in res['results'])

def test_bad_settings_value_is_reported(tmp_path):
    (tmp_path/'settings.ini').write_text('[DEFAULT]\nepochs = forty\n')
    r = run('demo', '--quiet', cwd=tmp_path)
    assert r.returncode == 1 and "epochs = 'forty' is not a valid int" in r.stderr
