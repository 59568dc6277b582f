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

def test_arguments_checked_before_torch_loads():
    "`kdbook --help` and argument errors answer at once: the command imports torch and fastai only to run a job"
    code = "import sys, kdbook.cli; print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr

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
    assert (tmp_path/'out'/'results.csv').read_text().startswith('model,params,accuracy,valid_accuracy,agreement,epochs,train_s')

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
    assert [row['epochs'] for row in res['results']] == [6, 2, 2] # the teacher trains 3x as long as its students
    assert all('rmse' in row and 'valid_rmse' in row for row in res['results'])

def test_bad_settings_value_is_reported(tmp_path):
    (tmp_path/'settings.ini').write_text('[DEFAULT]\nepochs = forty\n')
    r = run('demo', '--quiet', cwd=tmp_path)
    assert r.returncode == 1 and "epochs = 'forty' is not a valid int" in r.stderr

def test_pipeline_full_end_to_end(tmp_path):
    "`kdbook demo --pipeline full`: teacher, KD student, pruned with KD, int8, channel-pruned; one table, CSV/JSON/PNG"
    r = run('demo', '--pipeline', 'full', '--dataset', 'mnist1d', '--epochs', '2', '--quiet', '--out', str(tmp_path/'out'),
            '--export', str(tmp_path/'onnx'))
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr and 'compressed_bytes' in r.stdout and 'batch of 256' in r.stdout
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    s = res['settings']
    assert s['pipeline'] == 'full' and s['epochs'] == 2 and s['dataset'] == 'mnist1d'
    pruned = f"student, KD, pruned {s['student_sparsity']:.0%}"
    rows = {row['model']: row for row in res['results']}
    shared = f'{pruned}, shared 5-bit'
    assert list(rows) == ['teacher', 'student, KD', pruned, f'{pruned}, int8_weight', shared,
                          'student, KD, 50% channels removed']
    header = (tmp_path/'out'/'results.csv').read_text().splitlines()[0]
    assert header == ('model,params,nonzero_params,weight_sparsity,macs,size_bytes,compressed_bytes,stored_bytes,'
                      'x_teacher_fp32,x_own_fp32,latency_ms,bs,accuracy,valid_accuracy,agreement,train_s,stored_path')
    # every float model is stored beside the results, and the file is the row's model: same accuracy
    from kdbook.compress import load_compressed
    from kdbook.data import mnist1d_dls
    from kdbook.report import dl_accuracy
    sh = rows[shared]
    name = f"student-kd-pruned-{round(100 * s['student_sparsity'])}-shared-5-bit.kdbc"
    assert sh['stored_path'] == str(tmp_path/'out'/'models'/name)
    assert Path(sh['stored_path']).stat().st_size == sh['stored_bytes'] < rows[pruned]['stored_bytes']
    int8 = f"student-kd-pruned-{round(100 * s['student_sparsity'])}-int8-weight.kdbc" # its integers and scales
    assert rows[f'{pruned}, int8_weight']['stored_path'] == str(tmp_path/'out'/'models'/int8)
    from kdbook.deploy import onnx_name # every float stage exported, float and int8
    assert sorted(p.name for p in (tmp_path/'onnx').iterdir()) == sorted(
        onnx_name(n + e) for n in rows if 'int8_weight' not in n for e in ('', ' int8'))
    assert 'ONNX files' in r.stdout
    test = mnist1d_dls(seed=s['seed']).test # the pipeline reports its accuracy on the test split
    assert abs(dl_accuracy(load_compressed(sh['stored_path']), test) - sh['accuracy']) < 1e-4
    p, q, kd = rows[pruned], rows[f'{pruned}, int8_weight'], rows['student, KD']
    assert abs(p['weight_sparsity'] - s['student_sparsity']) < 1e-3 # the setting's sparsity, measured on the weights
    assert q['weight_sparsity'] >= p['weight_sparsity']             # int8 keeps the zeros
    assert q['size_bytes'] < p['size_bytes'] == kd['size_bytes']    # zeros alone do not shrink the file; int8 does
    assert p['nonzero_params'] < (1 - s['student_sparsity'] + 0.1) * kd['params']
    assert rows['teacher']['agreement'] == 1.0 and all(0 <= row['accuracy'] <= 1 for row in rows.values())
    assert rows['student, KD, 50% channels removed']['params'] < kd['params'] / 2
    assert (tmp_path/'out'/'results.png').stat().st_size > 10_000

def test_pipeline_sparsity_flag_sets_student_sparsity(tmp_path):
    "`--sparsity` overrides settings.ini's `student_sparsity`, the pipeline's target; the teachers' `sparsity` stays as it is"
    ini = (ROOT/'settings.ini').read_text()
    assert '\nsparsity = 0.9\n' in ini and '\nstudent_sparsity = 0.9\n' in ini, 'the project settings.ini changed its format'
    (tmp_path/'settings.ini').write_text(ini.replace('\nsparsity = 0.9\n', '\nsparsity = 0.3\n'))
    r = run('demo', '--pipeline', 'full', '--epochs', '1', '--sparsity', '0.7', '--quiet', '--out', 'out', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    assert res['settings']['student_sparsity'] == 0.7 and res['settings']['sparsity'] == 0.3
    rows = {row['model']: row for row in res['results']}
    assert 'student, KD, pruned 70%' in rows and 'student, KD, pruned 70%, int8_weight' in rows
    assert abs(rows['student, KD, pruned 70%']['weight_sparsity'] - 0.7) < 1e-3
    r = run('demo', '--pipeline', 'full', '--sparsity', '1.5', '--quiet', cwd=tmp_path)
    assert r.returncode == 1 and "student_sparsity (the command's --sparsity) must be in [0, 1)" in r.stderr

def test_pipeline_bad_input_is_a_clear_error():
    r = run('demo', '--pipeline', 'prune')
    assert r.returncode == 2 and "invalid choice: 'prune'" in r.stderr and "'full'" in r.stderr
    r = run('demo', '--pipeline', 'full', '--dataset', 'diabetes', '--quiet')
    assert r.returncode == 1 and 'needs a classification data set' in r.stderr and 'use mnist1d or digits' in r.stderr
    assert 'Traceback' not in r.stderr # more bad values (--sparsity without the pipeline): nbs/10_cli.ipynb
