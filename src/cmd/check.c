/* check.c - `kmseg check-data`: validates a dataset folder (images/masks or
 * nnU-Net raw, dataset.h) and optional split lists or an nnU-Net
 * splits_final.json up front and lists every problem, then a summary with
 * the layout and the kinds of masks found. Exits
 * non-zero when any problem is an error; warnings alone pass. The rules are
 * the loader's (src/train/dataset.h), so a folder that passes here loads. */
#include "cmd.h"

#include "../core/args.h"
#include "../train/dataset.h"
#include "../train/splits.h"

static const char *layout_desc(const km_dataset_index *idx) {
    if (!idx->nnunet) return "images/masks";
    return idx->n_chan_files == 3 ? "nnU-Net (three grey channel files per case)" : "nnU-Net (one _0000 file per case)";
}

/* Which kinds of masks were found, and the foreground rule. */
static void print_masks(const km_dataset_index *idx, const km_data_stats *st) {
    printf("  masks: %s;", km_dataset_label_desc(idx));
    const char *kn[] = {"binary 0/255 (> 127)", "binary 0/1", "label maps"};
    int kv[] = {st->n_bin255, st->n_bin01, st->n_labelmap};
    for (int i = 0, first = 1; i < 3; i++)
        if (kv[i]) printf("%s %d %s", first ? "" : ",", kv[i], kn[i]), first = 0;
    printf(" (files:");
    const char *fn[] = {"grey PNG", "16-bit PNG", "palette PNG (read by index)", "RGB PNG", "JPEG"};
    int fv[] = {st->n_png_grey, st->n_png16, st->n_palette, st->n_png_rgb, st->n_jpeg};
    for (int i = 0, first = 1; i < 5; i++)
        if (fv[i]) printf("%s %d %s", first ? "" : ",", fv[i], fn[i]), first = 0;
    printf(")\n");
    if (idx->label >= 0 && st->n_labelmap)
        printf("  %d of %d masks hold the label\n", st->n_with_label, st->n_labelmap);
}

km_status km_cmd_check_data(int argc, char **argv) {
    const char *data = NULL, *split_dir = NULL, *train_list = NULL, *val_list = NULL,
               *test_list = NULL, *label = NULL, *split_file = NULL;
    int size = 224, threads = km_get_threads(), max_show = 0, fold = 0;
    km_flag flags[] = {
        KM_CMD_DATA_FLAG(&data),
        KM_DATA_FLAGS(&label, &split_file, &fold),
        {"--split-dir", KM_FLAG_STR, &split_dir, "folder with train.txt [val.txt test.txt] to validate", 0, 0},
        KM_CMD_THREADS_FLAG(&threads),
        {"--train-list", KM_FLAG_STR, &train_list, "train id list to validate", 0, 0},
        {"--val-list", KM_FLAG_STR, &val_list, "val id list to validate", 0, 0},
        {"--test-list", KM_FLAG_STR, &test_list, "test id list to validate", 0, 0},
        {"--size", KM_FLAG_INT, &size, "crop size used for the 'foreground outside the crop' check", 0, 0},
        {"--max-problems", KM_FLAG_INT, &max_show, "print at most this many problems (0 = all)", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("check-data",
                                 "--data DIR [--label NAME|VALUE] [--split-dir DIR | --split-file splits_final.json "
                                 "[--fold K] | --train-list F [--val-list F] [--test-list F]]",
                                 flags, argc, argv, &help);
    if (s || help) return s;
    s = km_split_choose(&split_dir, split_file, fold);
    if (s) return s;
    if (size <= 0) return km_err(KM_EARG, "--size %d: expected a positive size", size);
    if (split_dir && (train_list || val_list || test_list))
        return km_err(KM_EARG, "--split-dir and --train-list/--val-list/--test-list are exclusive");
    if ((val_list || test_list) && !train_list)
        return km_err(KM_EARG, "--val-list/--test-list need --train-list");
    km_set_threads(threads);

    double t0 = km_now();
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    s = km_dataset_scan(data, label, &idx, &iss);
    if (s) {
        km_issues_free(&iss);
        return s;
    }
    km_data_stats st;
    km_dataset_verify(&idx, size, &iss, &st);
    km_split sp = {0};
    int have_split = 0;
    if (split_dir || train_list) {
        km_status ss = split_dir ? km_split_from_path(&idx, split_dir, fold, &sp, &iss)
                                 : km_split_from_lists(&idx, train_list, val_list, test_list, &sp, &iss);
        if (ss == KM_OK)
            have_split = 1;
        else if (ss != KM_EFORMAT) /* unreadable list file: not in the issue list yet */
            km_issues_add(&iss, 1, "", "%s", km_errmsg());
    }

    km_issues_print(&iss, stdout, max_show);
    printf("%s: %s layout, %d image/mask pairs indexed, %d readable and valid (%d RGB, %d grey)\n", data,
           layout_desc(&idx), idx.n, st.n_pairs, st.n_rgb, st.n_grey);
    print_masks(&idx, &st);
    if (st.max_w)
        printf("  sizes: width %d..%d, height %d..%d; mean foreground %.1f %%; %d empty masks\n", st.min_w,
               st.max_w, st.min_h, st.max_h, 100.0 * st.mean_fg, st.n_empty);
    if (idx.n_hidden) printf("  %d hidden files skipped\n", idx.n_hidden);
    if (have_split) {
        int used = sp.n_train + sp.n_val + sp.n_test;
        printf("  split: %d train, %d val, %d test; %d indexed pairs in no list\n", sp.n_train, sp.n_val,
               sp.n_test, idx.n - used);
    }
    printf("%d error%s, %d warning%s (%.1f s)\n", iss.n_err, iss.n_err == 1 ? "" : "s", iss.n_warn,
           iss.n_warn == 1 ? "" : "s", km_now() - t0);
    fflush(stdout);
    if (iss.n_err)
        s = km_err(KM_EFORMAT, "%s: %d error%s found (listed above)", data, iss.n_err, iss.n_err == 1 ? "" : "s");
    km_split_free(&sp);
    km_issues_free(&iss);
    km_dataset_index_free(&idx);
    return s;
}
