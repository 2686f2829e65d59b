"""fastbp's MLPClassifier/MLPRegressor against scikit-learn's, as drop-ins.

On scikit-learn's bundled data sets (iris, wine, breast cancer, digits: classifiers;
diabetes: regressor) both libraries fit the same estimator, with the same parameters
(scikit-learn's defaults unless given below: 100 hidden relu units, adam, max_iter=200,
random_state=0) on the same standardised 75 % training split, and are scored on the
other 25 % (accuracy, or R^2 for diabetes, whose target is standardised too; R^2 does
not change under that). For each it prints the median wall time of a warm fit (the
first fit of each library is untimed: it loads fastbp's compiled kernels), the
speed-up, the speed-up in process CPU time (medians of each; less moved by other
processes on the machine than wall time, but it counts the time threads spend
waiting for each other), both test scores and both epoch counts::

    python benchmarks/sklearn_dropin.py                     # every data set, 5 repeats
    python benchmarks/sklearn_dropin.py --datasets iris,digits --repeats 3 --threads 1

The two fits alternate, so a load change on the machine hits both; compare the ratios
of one run only. With the same random_state both start from the same weights and
follow the same algorithm, so the scores agree to rounding unless a late difference in
rounding flips the stopping epoch.
"""
import argparse
import statistics
import time
import warnings


DATASETS = {
    # name: (loader name, is_classification)
    "iris": ("load_iris", True),
    "wine": ("load_wine", True),
    "breast_cancer": ("load_breast_cancer", True),
    "digits": ("load_digits", True),
    "diabetes": ("load_diabetes", False),
}


def split(name):
    """Standardised (X_train, X_test, y_train, y_test) of a bundled data set."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    loader, classification = DATASETS[name]
    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y if classification else None)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    if not classification:
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return X_train, X_test, y_train, y_test


def timed_fit(make, X, y):
    """(wall seconds, process CPU seconds, fitted estimator) of one fit,
    ConvergenceWarnings silenced."""
    from sklearn.exceptions import ConvergenceWarning
    est = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start, cpu_start = time.perf_counter(), time.process_time()
        est.fit(X, y)
        return time.perf_counter() - start, time.process_time() - cpu_start, est


def compare(name, repeats, params):
    import sklearn.neural_network as sk

    import fastbp.estimators as fb
    classification = DATASETS[name][1]
    cls_name = "MLPClassifier" if classification else "MLPRegressor"
    makers = {"sklearn": lambda: getattr(sk, cls_name)(**params),
              "fastbp": lambda: getattr(fb, cls_name)(**params)}
    X_train, X_test, y_train, y_test = split(name)
    times = {lib: [] for lib in makers}
    cpu_times = {lib: [] for lib in makers}
    fitted = {}
    for lib, make in makers.items():   # untimed warm-up fit
        fitted[lib] = timed_fit(make, X_train, y_train)[2]
    for _ in range(repeats):
        for lib, make in makers.items():
            seconds, cpu_seconds, fitted[lib] = timed_fit(make, X_train, y_train)
            times[lib].append(seconds)
            cpu_times[lib].append(cpu_seconds)
    row = {"dataset": name, "shape": "x".join(map(str, X_train.shape))}
    for lib in makers:
        row[lib + "_s"] = statistics.median(times[lib])
        row[lib + "_cpu_s"] = statistics.median(cpu_times[lib])
        row[lib + "_score"] = fitted[lib].score(X_test, y_test)
        row[lib + "_iter"] = fitted[lib].n_iter_
    row["speedup"] = row["sklearn_s"] / row["fastbp_s"]
    row["cpu_speedup"] = row["sklearn_cpu_s"] / row["fastbp_cpu_s"]
    row["metric"] = "accuracy" if classification else "R^2"
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated subset of " + ", ".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per library")
    parser.add_argument("--max-iter", type=int, default=200, help="max_iter (epochs)")
    parser.add_argument("--hidden", default="100",
                        help="hidden_layer_sizes, comma-separated (default 100)")
    parser.add_argument("--solver", default="adam", help="solver of both (adam, sgd, lbfgs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for numba and BLAS (default: all)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        parser.error(f"--datasets: unknown {unknown}; choose from {', '.join(DATASETS)}")
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.threads is not None:
        import fastbp
        fastbp.set_num_threads(args.threads)
    params = dict(hidden_layer_sizes=tuple(int(h) for h in args.hidden.split(",")),
                  solver=args.solver, max_iter=args.max_iter, random_state=0)
    print(f"same settings for both: {params}; median of {args.repeats} warm fits")
    header = (f"{'dataset':<14}{'train':>9}{'sklearn s':>11}{'fastbp s':>10}"
              f"{'speed-up':>10}{'cpu s-up':>10}{'metric':>10}{'sklearn':>9}{'fastbp':>8}"
              f"{'epochs':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        r = compare(name, args.repeats, params)
        rows.append(r)
        print(f"{r['dataset']:<14}{r['shape']:>9}{r['sklearn_s']:>11.3f}{r['fastbp_s']:>10.3f}"
              f"{r['speedup']:>9.1f}x{r['cpu_speedup']:>9.1f}x{r['metric']:>10}"
              f"{r['sklearn_score']:>9.3f}"
              f"{r['fastbp_score']:>8.3f}{r['sklearn_iter']:>5}/{r['fastbp_iter']:<4}")
    return rows


if __name__ == "__main__":
    main()
