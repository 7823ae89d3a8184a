/* dataset_priv.h - helpers shared by dataset.c (images/ + masks/) and
 * nnunet.c (nnU-Net raw layout); not part of the dataset interface. */
#ifndef KM_DATASET_PRIV_H
#define KM_DATASET_PRIV_H

#include "dataset.h"

typedef struct {
    char *id, *name; /* id: the file name without its extension */
} km_named;

/* Lists the supported images of `dir` (sorted by id, then name); `rel` is the
 * folder's name in issue paths. Sub-folders, unsupported extensions and two
 * files for one id are issues (the latter dropped); dot-files are counted in
 * *n_hidden. Fails only when the folder cannot be opened. */
km_status km_ds_list_dir(const char *dir, const char *rel, km_named **out, int *nout, int *n_hidden,
                         km_issues *issues);
void km_ds_named_free(km_named *v, int n);
/* Appends an entry taking over img's strings (img's pointers become NULL). */
void km_ds_index_push(km_dataset_index *idx, int *cap, km_named *img, const char *mask_name);
/* The nnU-Net raw layout (nnunet.c): root/dataset.json, imagesTr/, labelsTr/.
 * Fills idx (folders, cases, channel files, labels); problems go to issues. */
km_status km_nnunet_scan(const char *root, km_dataset_index *idx, km_issues *issues);
/* An nnU-Net images folder without labels (imagesTs/), channel files grouped
 * by the dataset.json at `json_path`. */
km_status km_nnunet_scan_images(const char *dir, const char *json_path, km_dataset_index *idx,
                                km_issues *issues);
/* 1 when `path` is an existing folder / regular file. */
int km_ds_is_dir(const char *path);
int km_ds_is_file(const char *path);

#endif
