"""The generated part of docs/results.md: Tables 3, 6 and 7, the longer-training runs, the paper's claims tested
over the seeds, the AUPRO contrasts and Table 5's size and speed, from the result files of RESULTS."""
import math
import os
import sys

from . import config
from .config import (CSFLOW4, CSFLOW4_LONGER, CSFLOW6, CSFLOW6_LONGER, LONGER_EPOCHS, PROTOCOL, STAGE_EPOCHS,
                     VALIDFLOW, VALIDFLOW_LONGER)
from . import schema
from .files import read_json
from .statistics import ALPHA, compare, mean_std, pooled_seed_spread, t_critical, verdict

PAPER_TABLE3 = {VALIDFLOW[1]: 99.6, CSFLOW4[1]: 99.3, CSFLOW6[1]: None}
PAPER_TABLE6 = {1: 99.53, 2: 99.57, 3: 99.63, 4: 99.63, 5: 99.49}
# MVTec AD means: CBAM and branches 99.21, branches only 99.01, CBAM only 98.97, neither 98.80.
PAPER_TABLE7 = {"ValidFlow n = 3": 99.21, "FB without CBAM": 99.01, "FB without the 1<->3 branches": 98.97,
                "FB without both": 98.80}
TYPES = list(schema.TYPES)

# The paper's relative claims: (claim, configuration A, configuration B, the paper's A and B, expected sign of
# A - B: +1 "A is better", 0 "A and B are equal").
CLAIMS = [
    ("ValidFlow beats CS-Flow (Table 3)", VALIDFLOW, CSFLOW4, (99.6, 99.3), +1),
    ("ValidFlow beats CS-Flow with 6 blocks (not in the paper: the same-size-class rival)", VALIDFLOW, CSFLOW6, None,
     +1),
    ("n = 3 beats n = 1 (Table 6)", VALIDFLOW, ("table6", "n = 1"), (99.63, 99.53), +1),
    ("n = 3 beats n = 2 (Table 6)", VALIDFLOW, ("table6", "n = 2"), (99.63, 99.57), +1),
    ("n = 3 and n = 4 are equal (Table 6)", VALIDFLOW, ("table6", "n = 4"), (99.63, 99.63), 0),
    ("n = 3 beats n = 5 (Table 6)", VALIDFLOW, ("table6", "n = 5"), (99.63, 99.49), +1),
    ("CBAM in FB helps, with the 1↔3 branches (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without CBAM"),
     (99.21, 99.01), +1),
    ("the 1↔3 branches help, with CBAM (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without the 1<->3 branches"),
     (99.21, 98.97), +1),
    ("CBAM in FB helps, without the branches (Table 7, MVTec AD)", ("table7", "FB without the 1<->3 branches"),
     ("table7", "FB without both"), (98.97, 98.80), +1),
    ("the 1↔3 branches help, without CBAM (Table 7, MVTec AD)", ("table7", "FB without CBAM"), ("table7", "FB without both"),
     (99.01, 98.80), +1),
    ("CBAM and the branches together help (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without both"), (99.21, 98.80), +1),
    ("ValidFlow (60 epochs) beats CS-Flow trained for the official 240 epochs (not in the paper)", VALIDFLOW,
     CSFLOW4_LONGER, None, +1),
    ("ValidFlow beats CS-Flow, both trained for 240 epochs (not in the paper)", VALIDFLOW_LONGER, CSFLOW4_LONGER, None,
     +1),
    ("ValidFlow beats CS-Flow with 6 blocks, both trained for 240 epochs (not in the paper)", VALIDFLOW_LONGER,
     CSFLOW6_LONGER, None, +1),
]


def pct(x):
    return "%.2f" % (100 * x)


def fmt_mean_std(values):
    m, s = mean_std(values)
    return "%.2f ± %.2f" % (100 * m, 100 * s) if s is not None else "%.2f" % (100 * m)


def read_checked(path, check, what):
    """A JSON file checked by `check` (schema.py); anything wrong stops the tables with one line naming the file."""
    try:
        value = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        sys.exit("%s: not a readable %s (%s)" % (path, what, "nested too deeply" if isinstance(e, RecursionError) else e))
    try:
        check(value)
    except schema.Invalid as e:
        sys.exit("%s: not a valid %s: %s" % (path, what, e))
    return value


def load_results():
    """Every result file of config.RESULTS, each checked field by field (schema.py); a file that is not one (corrupt,
    cut short, another kind of JSON, an AUROC of NaN or 2.0) stops the tables with one line naming it and the field,
    rather than a traceback or tables that silently leave it out or print it."""
    results = []
    if os.path.isdir(config.RESULTS):
        for name in sorted(os.listdir(config.RESULTS)):
            if name.endswith(".json"):
                results.append(read_checked(os.path.join(config.RESULTS, name), schema.check_result,
                                            "result file of tools/reproduce_paper.py run"))
    return results


def load_speed():
    if not config.SPEED or not os.path.exists(config.SPEED):
        return None
    return read_checked(config.SPEED, schema.check_speed, "speed file of tools/reproduce_paper.py speed")


def timed_rounds(runs, speed):
    """Per run of `runs` timed by `speed`: (median images/s, every round's images/s)."""
    timed = speed["runs"] if speed else {}
    return [(timed[r["run"]]["median"], timed[r["run"]]["images_per_second"]) for r in runs if r["run"] in timed]


def group_row(label, runs, paper, speed):
    aurocs = [r["metrics"]["image_auroc"] for r in runs]
    seeds = ", ".join("%s (seed %d)" % (pct(r["metrics"]["image_auroc"]), r["seed"]) for r in
                      sorted(runs, key=lambda r: r["seed"]))
    per_type = " / ".join(pct(mean_std([r["metrics"]["image_auroc_per_type"][t] for r in runs])[0]) for t in TYPES)
    pixel = mean_std([r["metrics"]["pixel_auroc"] for r in runs])[0]
    aupro = mean_std([r["metrics"]["aupro"] for r in runs])[0]
    minutes = mean_std([r["training_seconds"] / 60 for r in runs])[0]
    timed = [median for median, _ in timed_rounds(runs, speed)]
    return "| %s | %s | %s | %s | %s | %s | %s | %s | %.1f M | %.2f | %.0f | %s | %s |" % (
        label, "%.2f" % paper if paper is not None else "–", fmt_mean_std(aurocs), len(runs), seeds, per_type,
        pct(pixel), pct(aupro), runs[0]["parameters"] / 1e6, runs[0]["gflops_per_image"], minutes,
        "%.0f" % (sum(timed) / len(timed)) if timed else "–", final_loss_text(runs))


def final_loss_text(runs):
    """The training loss at the last epoch and its fall over the last 10 epochs, means over the seeds."""
    histories = [r["loss_history"] for r in runs if len(r.get("loss_history", [])) > 10]
    if len(histories) != len(runs):
        return "–"
    last = sum(h[-1] for h in histories) / len(histories)
    fall = sum(h[-11] - h[-1] for h in histories) / len(histories)
    return "%.3f (−%.3f)" % (last, fall) if fall >= 0 else "%.3f (+%.3f)" % (last, -fall)


HEADER = ("| configuration | paper | image AUROC (ours, mean ± std) | seeds | each seed | per type: blowhole / break / "
          "crack / fray / uneven | pixel AUROC | AUPRO | parameters | GFLOP/image | training min ¹ | flow img/s ² | "
          "final loss ³ |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def tables_markdown(results):
    if not results:
        return "No finished runs yet: `scripts/reproduce_paper.sh` writes them.\n"
    by_label = {}
    for r in results:
        by_label.setdefault((r["table"], r["label"]), []).append(r)
    lines = []
    speed = load_speed()
    first = results[0]
    hosts = sorted({r["host"]["cpu"] for r in results})
    lines.append("Generated by `tools/reproduce_paper.py tables` from the %d result files in `results/mtd/` "
                 "(features `%s`, sha256 %s…; protocol: %s epochs, hidden %d, batch %d, Adam lr %g, weight decay %g; "
                 "host: %s). Do not edit by hand.\n" % (
                     len(results), first["features"]["file"], first["features"]["sha256"][:12],
                     PROTOCOL["epochs"], PROTOCOL["hidden"], PROTOCOL["batch_size"], PROTOCOL["lr"],
                     PROTOCOL["weight_decay"], "; ".join(hosts)))
    lines.append("### Table 3 on MTD: ValidFlow vs CS-Flow (image AUROC, %)\n")
    lines.append(HEADER)
    for label in PAPER_TABLE3:
        runs = by_label.get(("table3", label))
        if runs:
            lines.append(group_row(label, runs, PAPER_TABLE3[label], speed))
    lines.append("\nThe paper's 99.3 for CS-Flow is its Table 3 entry for CS-Flow (the official configuration); the "
                 "paper gives no MTD AUROC for its 6-block CS-Flow (Table 5 compares only size and speed).\n")

    lines.append("### Table 6 on MTD: number n of FA+FB modules\n")
    lines.append(HEADER)
    for n in (1, 2, 3, 4, 5):
        label, table = ("ValidFlow n = 3", "table3") if n == 3 else ("n = %d" % n, "table6")
        runs = by_label.get((table, label))
        if runs:
            lines.append(group_row("n = %d" % n + (" (the Table 3 runs)" if n == 3 else ""), runs, PAPER_TABLE6[n], speed))
    lines.append("")

    lines.append("### Table 7 on MTD: CBAM and the scale-1↔3 branches in FB\n")
    lines.append("The paper's Table 7 is measured on MVTec AD (not available here); its numbers are shown for the "
                 "direction of each effect only.\n")
    lines.append(HEADER)
    for label, paper in PAPER_TABLE7.items():
        table = "table3" if label == "ValidFlow n = 3" else "table7"
        runs = by_label.get((table, label))
        if runs:
            lines.append(group_row(label + (" (full FB; the Table 3 runs)" if table == "table3" else ""), runs, paper, speed))
    side_by_side = sorted(r["run"] for r in results if r.get("parallel_runs", 1) > 1)
    lines.append("\n¹ Training minutes were measured while other jobs shared the 2 cores, with a varying load, and "
                 "count only the training calls that finished (a run resumed from a checkpoint lost the interrupted "
                 "call's time): they are not comparable between runs. GFLOP/image is the flow's analytic forward cost.%s\n"
                 % (" These runs shared the cores with other runs of the grid (`run --jobs`): %s."
                    % ", ".join(side_by_side) if side_by_side else ""))
    if speed:
        lines.append("² Flow images/s: %s, measured by `tools/reproduce_paper.py speed` in one session (%s; %s; %d "
                     "threads; round-robin over the runs, %d rounds; load average %.1f before, %.1f after), mean over "
                     "the seeds; runs finished after that session show –. Ratios within this column are comparable.\n"
                     % (speed["what"], speed["date"][:10], speed["host"], speed["threads"], speed["rounds"],
                        speed["load_average_before"][0], speed["load_average_after"][0]))
    else:
        lines.append("² Flow images/s: not measured yet (`tools/reproduce_paper.py speed`).\n")
    lines.append("³ Training loss (negative log-likelihood per dimension; lower is a closer fit) at the last epoch "
                 "(%d in the protocol), mean over the seeds, and in brackets its change over the last 10 epochs: a "
                 "large fall means the flow was still far from converged when training ended.\n" % PROTOCOL["epochs"])
    lines.append(longer_markdown(by_label))
    lines.append(claims_markdown(by_label, speed))
    return "\n".join(lines) + "\n"


def model_of(runs):
    """The model a configuration's runs train ("validflow" or "csflow"): its seed spread is pooled with the other
    configurations of that model."""
    return runs[0]["config"]["model"]


MODEL_NAMES = {"validflow": "ValidFlow", "csflow": "CS-Flow"}


def claims_markdown(by_label, speed):
    """The paper's relative claims against our runs, each with a two-sided test at ALPHA over the seeds."""
    def aurocs(key):
        return metric_values(by_label, key, "image_auroc")

    models = sorted({model_of(runs) for runs in by_label.values()}, reverse=True)  # validflow first
    lines = ["### The paper's claims, tested on our runs\n",
             "Differences of mean image AUROC (points), each tested two-sided at %g. Two variants of one model "
             "(every Table 6 and 7 claim: ValidFlow against ValidFlow) use Student's t with the seed spread pooled "
             "over all configurations of that model that have two or more seeds: they are assumed to vary alike "
             "across seeds, and the pool has more degrees of freedom than any one configuration. ValidFlow against "
             "CS-Flow uses Welch's t, since the two models' spreads differ (below), or, while a side has one seed, "
             "the spread pooled over both. *Supported* and *contradicted* need p < %g; everything else is within "
             "what the seeds can decide. Where the paper gives its difference, the verdict also says when that size lies "
             "outside our confidence interval: the direction of an effect can be undecided while the paper's size "
             "of it is ruled out.\n" % (ALPHA, ALPHA)]
    spreads = []
    for key, runs in sorted(by_label.items()):
        values = aurocs(key)
        if len(values) >= 2:
            spreads.append("%s: std %.2f, range %s–%s over %d seeds" % (
                key[1], 100 * mean_std(values)[1], pct(min(values)), pct(max(values)), len(values)))
    pools = {model: pooled_over(by_label, {model}, "image_auroc") for model in models}
    measured = [(model, pool) for model, pool in pools.items() if pool[0] is not None]
    if spreads:
        lines.append("Seed spread of the image AUROC: " + "; ".join(spreads) + ". Pooled over the configurations "
                     "of one model: " + "; ".join("%s std %.2f (df %d)" % (MODEL_NAMES.get(m, m), 100 * pool[0],
                                                                            pool[1]) for m, pool in measured) + ".\n")
        model, (spread, df) = measured[0]
        smallest = [(n1, n2, 100 * t_critical(df, ALPHA) * spread * math.sqrt(1.0 / n1 + 1.0 / n2))
                    for n1, n2 in ((1, 3), (2, 2), (2, 3), (3, 3))]
        ablation = [abs(paper[0] - paper[1]) for _, _, b_key, paper, _ in CLAIMS if b_key[0] in ("table6", "table7")]
        lines.append("With %s's pooled spread, the smallest difference of means between two of its variants that "
                     "the test can decide is %s points; the paper's Table 6 and Table 7 differences are %.2f–%.2f "
                     "points.\n" % (MODEL_NAMES.get(model, model), ", ".join(
                         "%.2f (%d seed%s against %d)" % (d, n1, "s" if n1 > 1 else "", n2) for n1, n2, d in smallest),
                         min(ablation), max(ablation)))
    else:
        lines.append("Seed spread: not measured yet (no configuration has two seeds).\n")
    lines.append("| claim | paper | ours: A − B | 95 %% CI of A − B | seeds A / B | p (test) | verdict |\n"
                 "|---|---|---|---|---|---|---|".replace("95 %%", "%g %%" % (100 * (1 - ALPHA))))
    for claim, a_key, b_key, paper, sign in CLAIMS:
        paper_text = "%.2f vs %.2f (%+.2f)" % (paper[0], paper[1], paper[0] - paper[1]) if paper else "–"
        tested = contrast(by_label, a_key, b_key, "image_auroc")
        if not tested:
            lines.append("| %s | %s | – | – | %d / %d | – | not run yet |" % (
                claim, paper_text, len(by_label.get(a_key, [])), len(by_label.get(b_key, []))))
            continue
        a_values, b_values, (diff, p, how, half) = tested
        lines.append("| %s | %s | %s | %s | %d / %d | %s | %s |" % (
            claim, paper_text, difference_text(a_values, b_values, diff), interval_text(diff, half), len(a_values),
            len(b_values), "–" if p is None else "%.3f (%s)" % (p, how),
            verdict(diff, p, sign, paper[0] - paper[1] if paper else None, half)))
    lines.append("")
    lines.append(aupro_markdown(by_label))
    lines.append(size_speed_markdown(by_label, speed))
    return "\n".join(lines)


def longer_markdown(by_label):
    """The longer-training runs: the scores after every STAGE_EPOCHS epochs, beside the protocol's runs."""
    longer = [(key, runs) for key, runs in sorted(by_label.items(), reverse=True) if key[0] == "longer"]
    if not longer:
        return ""
    stages = [str(stage) for stage in range(STAGE_EPOCHS, LONGER_EPOCHS + 1, STAGE_EPOCHS)]
    lines = ["### Longer training: CS-Flow's official %d epochs\n" % LONGER_EPOCHS,
             "The paper's MTD protocol trains %d epochs; the official CS-Flow code trains %d (4 meta-epochs of 60), "
             "and after %d epochs CS-Flow's loss still falls %s (³). These runs continue "
             "the protocol's runs of the same seed to %d epochs (no learning-rate schedule; the Adam state is in "
             "the checkpoint) and score the test split after every %d, means over the seeds: does CS-Flow catch up "
             "on its own schedule?\n"
             % (PROTOCOL["epochs"], LONGER_EPOCHS, PROTOCOL["epochs"], fall_ratio_text(by_label), LONGER_EPOCHS,
                STAGE_EPOCHS),
             "| configuration | seeds | image AUROC after %s epochs | AUPRO after %s epochs | pixel AUROC | "
             "final loss ³ | training min ¹ |\n|---|---|---|---|---|---|---|" % (" / ".join(stages), " / ".join(stages))]
    for (table, label), runs in longer:
        def by_stage(metric):
            return " / ".join(pct(sum(r["metrics_by_epoch"][stage][metric] for r in runs) / len(runs))
                              for stage in stages)
        lines.append("| %s | %d | %s | %s | %s | %s | %.0f |" % (
            label, len(runs), by_stage("image_auroc"), by_stage("aupro"),
            pct(sum(r["metrics"]["pixel_auroc"] for r in runs) / len(runs)), final_loss_text(runs),
            sum(r["training_seconds"] for r in runs) / len(runs) / 60))
    lines.append("")
    return "\n".join(lines)


def fall_ratio_text(by_label):
    """How much faster the 4-block CS-Flow's loss falls over the protocol's last 10 epochs than ValidFlow's."""
    def fall(key):
        runs = by_label.get(key, [])
        return sum(r["loss_history"][-11] - r["loss_history"][-1] for r in runs) / len(runs) if runs else None
    cs, vf = fall(CSFLOW4), fall(VALIDFLOW)
    return "%.1f× as fast as ValidFlow's" % (cs / vf) if cs and vf and vf > 0 else "(ValidFlow not run yet)"


def metric_values(by_label, key, metric):
    return [r["metrics"][metric] for r in by_label[key]]


def pooled_over(by_label, models, metric):
    """The seed spread of metric pooled over the configurations of the given models."""
    return pooled_seed_spread([metric_values(by_label, key, metric) for key, runs in by_label.items()
                               if model_of(runs) in models])


def contrast(by_label, a_key, b_key, metric):
    """(A's values, B's values, compare(...)) of configurations A and B in metric, or None if one is not run."""
    a, b = by_label.get(a_key), by_label.get(b_key)
    if not a or not b:
        return None
    a_values, b_values = metric_values(by_label, a_key, metric), metric_values(by_label, b_key, metric)
    pooled = pooled_over(by_label, {model_of(a), model_of(b)}, metric)
    return a_values, b_values, compare(a_values, b_values, pooled, model_of(a) == model_of(b))


def difference_text(a_values, b_values, diff):
    return "%s − %s = %+.2f" % (pct(sum(a_values) / len(a_values)), pct(sum(b_values) / len(b_values)), 100 * diff)


def interval_text(diff, half):
    return "–" if half is None else "%+.2f … %+.2f" % (100 * (diff - half), 100 * (diff + half))


def aupro_markdown(by_label):
    """The same contrasts on AUPRO, which the paper does not report: where the variants differ in their maps."""
    lines = ["Not claimed by the paper: the same contrasts on AUPRO (FPR ≤ 30 %%, the localisation metric), tested "
             "the same way with AUPRO's own seed spread (pooled std: %s).\n" % "; ".join(
                 "%s %.2f (df %d)" % (MODEL_NAMES.get(m, m), 100 * pool[0], pool[1])
                 for m, pool in ((m, pooled_over(by_label, {m}, "aupro")) for m in ("validflow", "csflow"))
                 if pool[0] is not None) or "not measured yet",
             "| contrast | ours: A − B | %g %% CI of A − B | seeds A / B | p (test) | finding |\n"
             "|---|---|---|---|---|---|" % (100 * (1 - ALPHA))]
    tested_any = False
    for claim, a_key, b_key, _, _ in CLAIMS:
        tested = contrast(by_label, a_key, b_key, "aupro")
        if not tested:
            continue
        tested_any = True
        a_values, b_values, (diff, p, how, half) = tested
        if p is None:
            finding = "undecided: no seed spread measured yet"
        elif p < ALPHA:
            finding = "**A's maps are better**" if diff > 0 else "**B's maps are better**"
        else:
            finding = "no difference beyond the seed spread"
        lines.append("| %s | %s | %s | %d / %d | %s | %s |" % (
            contrast_name(a_key, b_key), difference_text(a_values, b_values, diff), interval_text(diff, half),
            len(a_values), len(b_values), "–" if p is None else "%.3f (%s)" % (p, how), finding))
    lines.append("")
    return "\n".join(lines) if tested_any else ""


def contrast_name(a_key, b_key):
    return "%s vs %s" % (a_key[1], b_key[1])


def size_speed_markdown(by_label, speed):
    """Table 5's claims: ValidFlow n = 3 against CS-Flow with 6 blocks, in parameters and speed."""
    v, c = by_label.get(VALIDFLOW), by_label.get(CSFLOW6)
    lines = ["Size and speed (the paper's Table 5: ValidFlow n = 3 against CS-Flow with 6 blocks, EfficientNet-B5, "
             "hidden width per its Fig. 2; FPS on a GPU at batch 16, backbone included):\n",
             "| claim | paper | ours | verdict |\n|---|---|---|---|"]
    if not v or not c:
        lines.append("| fewer parameters, faster | 162.89 M vs 370.50 M; 122 vs 100 FPS | – | not run yet |")
        return "\n".join(lines) + "\n"
    pv, pc = v[0]["parameters"], c[0]["parameters"]
    lines.append("| fewer parameters | 162.89 M vs 370.50 M (×0.44) | %.1f M vs %.1f M (×%.2f, exact count) | %s |" % (
        pv / 1e6, pc / 1e6, pv / pc, "**supported**" if pv < pc else "**contradicted**"))
    timed = [timed_rounds(runs, speed) for runs in (v, c)]
    if not timed[0] or not timed[1]:
        lines.append("| faster | 122 vs 100 FPS (×1.22) | – | not measured yet |")
    else:
        # The same statistic as the tables' column (mean over seeds of each run's median); every round for overlap.
        means = [sum(median for median, _ in t) / len(t) for t in timed]
        rounds = [[x for _, xs in t for x in xs] for t in timed]
        ratio = means[0] / means[1]
        lines.append("| faster | 122 vs 100 FPS (×1.22) | flow only, CPU: %.0f vs %.0f img/s (×%.2f; slowest round of "
                     "ValidFlow %.0f, fastest of CS-Flow %.0f) ² | %s |" % (
                         means[0], means[1], ratio, min(rounds[0]), max(rounds[1]), speed_verdict(*rounds)))
    return "\n".join(lines) + "\n"


def speed_verdict(validflow_rounds, csflow_rounds):
    """Decided only when every timed round of one model beat every round of the other (rounds of one session)."""
    if min(validflow_rounds) > max(csflow_rounds):
        return "**supported** (every round of ValidFlow faster than every round of CS-Flow)"
    if max(validflow_rounds) < min(csflow_rounds):
        return "**contradicted** (every round of CS-Flow faster than every round of ValidFlow)"
    return "undecided: the rounds overlap (a verdict needs every round of one faster than every round of the other)"


BEGIN = "<!-- BEGIN GENERATED: tools/reproduce_paper.py tables -->"
END = "<!-- END GENERATED -->"


def cmd_tables(a):
    if not os.path.isfile(config.DOC):
        sys.exit("%s not found: the tables are generated into its marked section" % config.DOC)
    with open(config.DOC) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit("%s has no generated section (%s ... %s)" % (config.DOC, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    results = load_results()
    if not results:  # a mistyped or emptied folder must not replace the tables with none
        sys.exit("%s holds no result files (*.json): refusing to generate tables from nothing" % config.RESULTS)
    generated = tables_markdown(results)
    new_text = head + BEGIN + "\n" + generated + END + tail
    if getattr(a, "check", False):
        if new_text != text:
            sys.exit("%s: the generated tables differ from what %s/*.json give: run "
                     "`tools/reproduce_paper.py tables` (never edit them by hand)"
                     % (os.path.relpath(config.DOC, config.ROOT), os.path.relpath(config.RESULTS, config.ROOT)))
        print("tables of %s match the %d result files" % (os.path.relpath(config.DOC, config.ROOT), len(results)))
        return
    tmp = config.DOC + ".validflow-tmp.%d.0" % os.getpid()
    with open(tmp, "w") as f:
        f.write(new_text)
    os.replace(tmp, config.DOC)
    print("tables of %s regenerated from %d result files" % (os.path.relpath(config.DOC, config.ROOT), len(results)))
