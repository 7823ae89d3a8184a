/* check.c - `kmseg check-data`: validates a dataset folder (and optional
 * split lists) up front and lists every problem, then a summary. Exits
 * non-zero when any problem is an error; warnings alone pass. The rules are
 * the loader's (src/train/dataset.h), so a folder that passes here loads. */
#include "cmd.h"

#include "../core/args.h"
#include "../train/dataset.h"
#include "../train/splits.h"

km_status km_cmd_check_data(int argc, char **argv) {
    const char *data = NULL, *split_dir = NULL, *train_list = NULL, *val_list = NULL,
               *test_list = NULL;
    int size = 224, threads = km_get_threads(), max_show = 0;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder with images/ and masks/", 1, 0},
        {"--split-dir", KM_FLAG_STR, &split_dir, "folder with train.txt [val.txt test.txt] to validate", 0, 0},
        {"--train-list", KM_FLAG_STR, &train_list, "train id list to validate", 0, 0},
        {"--val-list", KM_FLAG_STR, &val_list, "val id list to validate", 0, 0},
        {"--test-list", KM_FLAG_STR, &test_list, "test id list to validate", 0, 0},
        {"--size", KM_FLAG_INT, &size, "crop size used for the 'foreground outside the crop' check", 0, 0},
        {"--threads", KM_FLAG_INT, &threads, "decoding threads", 0, 0},
        {"--max-problems", KM_FLAG_INT, &max_show, "print at most this many problems (0 = all)", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("check-data", "--data DIR [--split-dir DIR | --train-list F [--val-list F] [--test-list F]]", flags, argc,
                                 argv, &help);
    if (s || help) return s;
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
    s = km_dataset_scan(data, &idx, &iss);
    if (s) {
        km_issues_free(&iss);
        return s;
    }
    km_data_stats st;
    km_dataset_verify(&idx, size, &iss, &st);
    km_split sp = {0};
    int have_split = 0;
    if (split_dir || train_list) {
        km_status ss = split_dir ? km_split_from_dir(&idx, split_dir, &sp, &iss)
                                 : km_split_from_lists(&idx, train_list, val_list, test_list, &sp, &iss);
        if (ss == KM_OK)
            have_split = 1;
        else if (ss != KM_EFORMAT) /* unreadable list file: not in the issue list yet */
            km_issues_add(&iss, 1, "", "%s", km_errmsg());
    }

    km_issues_print(&iss, stdout, max_show);
    printf("%s: %d image/mask pairs indexed, %d readable and valid (%d RGB, %d grey)\n", data, idx.n,
           st.n_pairs, st.n_rgb, st.n_grey);
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
