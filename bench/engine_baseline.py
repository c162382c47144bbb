#!/usr/bin/env python3
"""The engine's render speed against a baseline commit's, measured in the same run.

  python3 bench/engine_baseline.py                      # builtin_16x32 text, this tree vs the
                                                        # reference file's base commit, 3 runs
  python3 bench/engine_baseline.py --cases all          # every render case, text and OpenMetrics
  python3 bench/engine_baseline.py --base 5d14075       # another baseline
  python3 bench/engine_baseline.py --against HEAD~3     # a commit instead of the work tree
  python3 bench/engine_baseline.py --update-reference   # store this run's figures

On a shared machine an absolute median moves by tens of percent from one run to the next, so a
figure alone cannot tell a regression from a busy neighbour. This script builds the baseline
commit's engine (from `git archive`, into a temporary directory: only this repository's own
history, nothing fetched) next to the current one, links both into one binary
(bench/engine_baseline.rs: the same lists as the criterion bench, the same compiler profile for
both) and measures them in the same run, two ways: criterion's medians (one engine for seconds,
then the other, alternately first), shown for reference; and paired rounds (current, baseline,
baseline, current, about 0.2 ms each, for --paired-time seconds), whose median ratio is the
figure judged. Two runs of one engine against itself gave paired ratios of 0.998 and 0.999;
criterion's ratios for one pair of engines ranged from 0.60 to 1.40 on the same afternoon.

What it prints is the ratio current / baseline, per run and as the median of the runs, beside
the reference ratio kept in bench/engine_baseline.json (with the figures it was measured with).
A paired ratio above the reference by more than --tolerance exits 1, so a regression shows by
itself; --update-reference stores a new one (after an intended change).

Commits whose engine is the crate engine/ are extracted whole; older ones (the engine was
src/format/ of the plugin crate, up to 0bb29be) as src/format/ in a crate of their own, since
that module never used anything outside itself but std and itoa. The harness calls only
`Layout::new(&[(&str, MetricType)], &Options)`, `Options::default()`, `Layout::render(&[i64],
Format, &mut Vec<u8>)` and `Layout::series()`: if one of these changes, the base has to move to
a commit that has the new form (and the reference with it).
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, loadavg, log, machine  # noqa: E402

REFERENCE = os.path.join(ROOT, 'bench', 'engine_baseline.json')
HARNESS = os.path.join(ROOT, 'bench', 'engine_baseline.rs')
DEFAULT_CASES = ['builtin_16x32/Text']
ALL_CASES = ['%s/%s' % (c, f) for c in ('builtin_16x32', 'builtin_64x64', 'escapable_4096')
             for f in ('Text', 'OpenMetrics')]


def git(*args):
    return subprocess.run(['git', '-C', ROOT, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def has(rev, path):
    return subprocess.run(['git', '-C', ROOT, 'cat-file', '-e', '%s:%s' % (rev, path)],
                          capture_output=True).returncode == 0


def extract(rev, dest, crate):
    """The engine of `rev` as a crate named `crate` in `dest`."""
    os.makedirs(dest)
    if has(rev, 'engine/Cargo.toml'):
        archive(rev, 'engine', dest)
        src = os.path.join(dest, 'engine')
        manifest = os.path.join(src, 'Cargo.toml')
        text = open(manifest).read()
        # Two packages of one name and version cannot share a lock file.
        text, n = re.subn(r'(?m)^name = "metrics_prometheus_engine"$', 'name = "%s"' % crate,
                          text, count=1)
        if n != 1:
            sys.exit('%s: engine/Cargo.toml has no package name to rename' % rev)
        open(manifest, 'w').write(text)
        return src
    if has(rev, 'src/format/mod.rs'):
        archive(rev, 'src/format', dest)
        with open(os.path.join(dest, 'src', 'lib.rs'), 'w') as f:
            f.write('pub mod format;\n')
        with open(os.path.join(dest, 'Cargo.toml'), 'w') as f:
            f.write('[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\n'
                    'publish = false\n\n[dependencies]\nitoa = "1"\n' % crate)
        return dest
    sys.exit('%s has neither engine/ nor src/format/: no engine to compare' % rev)


def archive(rev, path, dest):
    tar = subprocess.run(['git', '-C', ROOT, 'archive', '--format=tar', rev, path],
                         check=True, capture_output=True).stdout
    # -m: extraction time, not the commit's, as the files' mtime: cargo judges a path crate
    # fresh by mtimes, and an older commit's files would look older than the last build of
    # another commit in the same target directory, which would then run unchanged.
    subprocess.run(['tar', '-x', '-m', '-C', dest], input=tar, check=True)


def project(tmp, current, baseline):
    """The harness crate: both engines as dependencies, bench/engine_baseline.rs as its bench."""
    dep = lambda name, path, package=None: '%s = { %spath = %s }\n' % (  # noqa: E731
        name, 'package = %s, ' % json.dumps(package) if package else '', json.dumps(path))
    with open(os.path.join(tmp, 'Cargo.toml'), 'w') as f:
        f.write('[package]\nname = "mp_engine_baseline_bench"\nversion = "0.0.0"\n'
                'edition = "2021"\npublish = false\n\n'
                # Its own workspace: the temporary directory is inside no other.
                '[workspace]\n\n[dependencies]\n')
        f.write(dep('mp_engine_current', current[0], current[1]))
        f.write(dep('mp_engine_baseline', baseline, None))
        f.write('\n[dev-dependencies]\ncriterion = { version = "0.5", default-features = false,'
                ' features = ["cargo_bench_support"] }\n\n')
        f.write('[[bench]]\nname = "engine_baseline"\npath = %s\nharness = false\n'
                % json.dumps(HARNESS))
    os.makedirs(os.path.join(tmp, 'src'))
    open(os.path.join(tmp, 'src', 'lib.rs'), 'w').close()
    # The repository's lock: the same itoa, criterion... as `cargo bench` in the workspace,
    # and no registry lookup for versions already resolved there.
    lock = os.path.join(ROOT, 'Cargo.lock')
    if os.path.exists(lock):
        with open(lock) as src, open(os.path.join(tmp, 'Cargo.lock'), 'w') as dst:
            dst.write(src.read())
    return os.path.join(tmp, 'Cargo.toml')


def cargo_bench(manifest, target, env_extra, args):
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    for k in ('MP_BASELINE_FIRST', 'MP_INTERLEAVED', 'MP_CASES'):
        env.pop(k, None)
    env.update(env_extra)
    cmd = ['cargo', 'bench', '--quiet', '--manifest-path', manifest, '--bench',
           'engine_baseline', '--', *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in r.stderr.splitlines():
        if 'the engines differ' in line:
            log('WARNING ' + line)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        sys.exit('cargo bench failed (%d)' % r.returncode)
    return r.stdout


def run_criterion(manifest, target, home, cases, warm, meas, baseline_first):
    """Criterion's medians (ns), by `LIST/FORMAT/ENGINE`."""
    filt = '^engine_baseline/(%s)/(current|baseline)$' % '|'.join(re.escape(c) for c in cases)
    env = {'CRITERION_HOME': home}
    if baseline_first:
        env['MP_BASELINE_FIRST'] = '1'
    cargo_bench(manifest, target, env, [filt, '--noplot', '--warm-up-time', str(warm),
                                        '--measurement-time', str(meas)])
    found = {}
    for dirpath, _, files in os.walk(home):
        if dirpath.endswith(os.sep + 'new') and 'estimates.json' in files:
            b = json.load(open(os.path.join(dirpath, 'benchmark.json')))
            e = json.load(open(os.path.join(dirpath, 'estimates.json')))
            found[b['function_id']] = e['median']['point_estimate']
    return found


def run_paired(manifest, target, cases, seconds):
    """The harness' paired rounds (MP_INTERLEAVED), by `LIST/FORMAT`."""
    out = cargo_bench(manifest, target, {'MP_INTERLEAVED': str(seconds),
                                         'MP_CASES': ','.join(cases)}, [])
    found = {}
    for line in out.splitlines():
        if line.startswith('{'):
            d = json.loads(line)
            found[d['case']] = d
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--base', help='baseline commit (default: the reference file\'s)')
    ap.add_argument('--against', help='commit to compare instead of the work tree\'s engine/')
    ap.add_argument('--cases', default=','.join(DEFAULT_CASES),
                    help='LIST/FORMAT,... or "all" (default %(default)s)')
    ap.add_argument('--repeat', type=int, default=3, help='runs (default %(default)s)')
    ap.add_argument('--warm-up-time', type=float, default=1)
    ap.add_argument('--measurement-time', type=float, default=4,
                    help='criterion\'s, per engine and case (default %(default)s s)')
    ap.add_argument('--paired-time', type=float, default=8,
                    help='paired rounds per case and run (default %(default)s s)')
    ap.add_argument('--no-criterion', action='store_true', help='paired rounds only')
    ap.add_argument('--tolerance', type=float, default=0.05,
                    help='allowed rise of the ratio over the reference (default %(default)s)')
    ap.add_argument('--update-reference', action='store_true',
                    help='write this run\'s figures to bench/engine_baseline.json')
    ap.add_argument('--json', help='also write this run\'s figures to a file')
    a = ap.parse_args()

    ref = json.load(open(REFERENCE)) if os.path.exists(REFERENCE) else {}
    base = a.base or ref.get('base')
    if not base:
        sys.exit('no --base and no reference file')
    base_full = git('rev-parse', '--verify', base + '^{commit}')
    cases = ALL_CASES if a.cases == 'all' else a.cases.split(',')
    for c in cases:
        if c not in ALL_CASES:
            sys.exit('unknown case %s (known: %s)' % (c, ', '.join(ALL_CASES)))

    target = os.path.join(ROOT, 'target', 'engine-baseline')
    crit, paired = [], []
    with tempfile.TemporaryDirectory(prefix='mp-engine-baseline-') as tmp:
        baseline = extract(base_full, os.path.join(tmp, 'baseline'), 'mp_engine_baseline')
        if a.against:
            against = git('rev-parse', '--verify', a.against + '^{commit}')
            current = (extract(against, os.path.join(tmp, 'current'), 'mp_engine_current'), None)
            label = against[:10]
        else:
            current = (os.path.join(ROOT, 'engine'), 'metrics_prometheus_engine')
            dirty = git('status', '--porcelain', '--', 'engine/src', 'engine/Cargo.toml')
            label = git('rev-parse', '--short=10', 'HEAD') + (' + changes' if dirty else '')
        manifest = project(tmp, current, baseline)
        log('current %s, baseline %s: building' % (label, base_full[:10]))
        for i in range(a.repeat):
            first = 'baseline' if i % 2 else 'current'
            if not a.no_criterion:
                found = run_criterion(manifest, target, os.path.join(tmp, 'criterion-%d' % i),
                                      cases, a.warm_up_time, a.measurement_time, i % 2 == 1)
                crit.append(found)
                for c in cases:
                    cur, bas = found[c + '/current'], found[c + '/baseline']
                    log('run %d/%d criterion %-24s current %8.2f µs  baseline %8.2f µs  '
                        'ratio %.3f  (%s first)' % (i + 1, a.repeat, c, cur / 1e3, bas / 1e3,
                                                     cur / bas, first))
            found = run_paired(manifest, target, cases, a.paired_time)
            paired.append(found)
            for c in cases:
                d = found[c]
                log('run %d/%d paired    %-24s current %8.2f µs  baseline %8.2f µs  '
                    'ratio %.3f  (%d rounds)' % (i + 1, a.repeat, c, d['current_ns'] / 1e3,
                                                 d['baseline_ns'] / 1e3, d['ratio'], d['rounds']))

    cpus, model = machine()
    result = {
        'base': base_full[:10],
        'current': label,
        'date': datetime.date.today().isoformat(),
        'machine': '%d cores, %s' % (cpus, model),
        'loadavg_after': loadavg(),
        'runs': a.repeat,
        'criterion_measurement_time_s': None if a.no_criterion else a.measurement_time,
        'paired_time_s': a.paired_time,
        'cases': {},
    }
    same_base = ref.get('base') == result['base']
    regressed = []
    print('\n%-24s %-9s %11s %11s %7s %9s  %s' % ('case (median of runs)', 'measure', 'current',
                                                 'baseline', 'ratio', 'reference',
                                                 'ratios of the runs'))
    for c in cases:
        fig = {}
        if crit:
            ratios = [r[c + '/current'] / r[c + '/baseline'] for r in crit]
            fig['criterion'] = {
                'current_us': round(statistics.median(r[c + '/current'] for r in crit) / 1e3, 2),
                'baseline_us': round(statistics.median(r[c + '/baseline'] for r in crit) / 1e3, 2),
                'ratio': round(statistics.median(ratios), 3),
                'ratios': [round(x, 3) for x in ratios]}
        ratios = [r[c]['ratio'] for r in paired]
        fig['paired'] = {
            'current_us': round(statistics.median(r[c]['current_ns'] for r in paired) / 1e3, 2),
            'baseline_us': round(statistics.median(r[c]['baseline_ns'] for r in paired) / 1e3, 2),
            'ratio': round(statistics.median(ratios), 3),
            'ratios': [round(x, 3) for x in ratios],
            'current_min_us': round(min(r[c]['current_min_ns'] for r in paired) / 1e3, 2),
            'baseline_min_us': round(min(r[c]['baseline_min_ns'] for r in paired) / 1e3, 2)}
        result['cases'][c] = fig
        refc = (ref.get('cases', {}).get(c) or {}) if same_base else {}
        for m in ('criterion', 'paired'):
            if m not in fig:
                continue
            f, rf = fig[m], refc.get(m)
            mark = ''
            # The paired ratio is the one steady enough to judge by; criterion's is shown.
            if m == 'paired' and rf and f['ratio'] > rf['ratio'] * (1 + a.tolerance):
                mark = '  REGRESSION (over %.3f)' % (rf['ratio'] * (1 + a.tolerance))
                regressed.append(c)
            print('%-24s %-9s %8.2f µs %8.2f µs %7.3f %9s  %s%s' % (
                c, m, f['current_us'], f['baseline_us'], f['ratio'],
                '%.3f' % rf['ratio'] if rf else '-', ' '.join('%.3f' % x for x in f['ratios']),
                mark))
    print('(ratio = current / baseline %s; %s; load average after the runs: %s)'
          % (result['base'], result['machine'], result['loadavg_after']))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
            f.write('\n')
    if a.update_reference:
        merged = ref if same_base else {}
        merged.update({k: v for k, v in result.items() if k != 'cases'})
        merged.setdefault('cases', {}).update(result['cases'])
        with open(REFERENCE, 'w') as f:
            json.dump(merged, f, indent=2, ensure_ascii=False)
            f.write('\n')
        log('reference written: ' + os.path.relpath(REFERENCE, ROOT))
    elif regressed:
        sys.exit('slower than the reference ratio by more than %d %%: %s'
                 % (a.tolerance * 100, ', '.join(regressed)))


if __name__ == '__main__':
    main()
