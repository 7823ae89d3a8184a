/* splits.h - train/val/test splits and nested labelled fractions
 * (method.md section 2).
 *
 * Everything works on indices 0..n-1 into a dataset index whose ids are
 * sorted by byte order (km_dataset_scan sorts them), so a split depends only
 * on the set of ids and the seed, never on directory listing order.
 *
 * Random split: one Fisher-Yates permutation of 0..n-1 from km_rng seeded
 * with `seed` (km_rng_shuffle); n_val = floor(f_val * n + 0.5),
 * n_test = floor(f_test * n + 0.5) (round half up), n_train = n - n_val -
 * n_test; train takes the first n_train entries of the permutation, val the
 * next n_val, test the rest. 1000 -> 800/100/100, 1864 -> 1492/186/186.
 * Each list is then sorted ascending (so files list ids in index order).
 *
 * Labelled fractions: one permutation of the train list from a second stream
 * (seed ^ KM_SPLIT_LABEL_SALT), labelled = its first floor(f * n_train + 0.5)
 * entries, unlabelled = the rest. The permutation does not depend on f, so the
 * fractions are nested: 25 % c 50 % c 75 % c 100 %.
 *
 * User lists: text files, one id per line, UTF-8/bytes; surrounding
 * whitespace and a trailing '\r' are stripped, empty lines and lines starting
 * with '#' are skipped. An id may carry its image extension
 * ("a.jpg" == "a"). Unknown ids, duplicates within a list and ids in more
 * than one list are errors; every one of them is listed in the km_issues
 * report before the call fails. */
#ifndef KM_SPLITS_H
#define KM_SPLITS_H

#include "dataset.h"

#define KM_SPLIT_LABEL_SALT 0x6c6162656c6c6564ULL /* "labelled" */

typedef struct {
    int *train, *val, *test; /* indices into the dataset index, ascending */
    int n_train, n_val, n_test;
} km_split;

void km_split_random(int n, uint64_t seed, double f_val, double f_test, km_split *out);
/* Labelled subset of split->train; both outputs ascending, caller frees with
 * km_free. frac in (0, 1]. */
void km_split_labelled(const km_split *sp, double frac, uint64_t seed, int **labelled, int *n_lab,
                       int **unlabelled, int *n_unl);

/* Reads user lists (any of the paths may be NULL, except train). Problems go
 * to `issues` (may be NULL); the return is KM_EFORMAT if any was an error. */
km_status km_split_from_lists(const km_dataset_index *idx, const char *train_path,
                              const char *val_path, const char *test_path, km_split *out,
                              km_issues *issues);
/* The same for a folder holding train.txt and optionally val.txt, test.txt
 * (what km_split_write produces, so a run folder's splits can be reused). */
km_status km_split_from_dir(const km_dataset_index *idx, const char *dir, km_split *out,
                            km_issues *issues);

/* A user split from `path`: a folder of lists (km_split_from_dir; fold must
 * be 0) or a file, read as nnU-Net's splits_final.json: a list of folds
 * [{"train": [case ids], "val": [case ids]}, ...], of which fold `fold` gives
 * train and val (test empty). Unknown, duplicate and shared ids are issues as
 * for lists; a fold out of range is KM_EARG. */
km_status km_split_from_path(const km_dataset_index *idx, const char *path, int fold, km_split *out,
                             km_issues *issues);
/* The --split-dir / --split-file / --fold choice of a command: exclusive
 * flags (KM_EARG), fold >= 0 and only with --split-file; --split-file's path
 * replaces *split_dir (both are read by km_split_from_path). */
km_status km_split_choose(const char **split_dir, const char *split_file, int fold);

/* The dataset flags of every command that reads --data: the label to
 * segment, an nnU-Net split file and its fold. Expands to three km_flag
 * entries (args.h); check the values with km_split_choose. */
#define KM_DATA_FLAGS(label, split_file, fold)                                                                    \
    {"--label", KM_FLAG_STR, (label),                                                                             \
     "label to segment: a mask value, or a label name from an nnU-Net dataset.json (default: binary 0/255 or 0/1 " \
     "masks; nnU-Net: its only foreground label)", 0, 0},                                                         \
    {"--split-file", KM_FLAG_STR, (split_file), "nnU-Net splits_final.json: train/val of --fold (instead of --split-dir)", 0, 0}, \
    {"--fold", KM_FLAG_INT, (fold), "fold of --split-file", 0, 0}

/* Writes <dir>/train.txt, val.txt, test.txt (ids without extension, one per
 * line, atomically). */
km_status km_split_write(const km_dataset_index *idx, const km_split *sp, const char *dir);
/* Writes one id list. */
km_status km_write_id_list(const km_dataset_index *idx, const int *which, int n, const char *path);

void km_split_free(km_split *sp);

#endif
