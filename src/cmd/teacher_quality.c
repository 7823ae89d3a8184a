/* teacher_quality.c - `kmseg teacher-quality`: Dice/IoU of the teacher on a
 * dataset, prompted from the ground truth or from a student checkpoint, at
 * the original resolution (library: eval/teacher_quality.h). */
#include "cmd.h"

#include "../core/args.h"
#include "../eval/teacher_quality.h"
#include "../mine/embcache.h"

#include <string.h>

km_status km_cmd_teacher_quality(int argc, char **argv) {
    km_tq_config c;
    memset(&c, 0, sizeof c);
    km_refine_config_default(&c.teacher);
    const char *teacher = NULL, *profile = "auto", *prompts = "gt-box", *box_rule = "per-component";
    const char *split = "all", *cache_dir = NULL;
    int points = 1, no_cache = 0, threads = 2, quiet = 0;
    km_flag flags[] = {
        KM_CMD_DATA_FLAG(&c.data),
        {"--out", KM_FLAG_STR, &c.out, "output folder for per_image.csv and summary.json", 1, 0},
        {"--prompts", KM_FLAG_STR, &prompts, "gt-box, gt-box+points (from the ground truth) or student (--weights)", 0, 0},
        {"--weights", KM_FLAG_STR, &c.weights, "student checkpoint whose predictions prompt the teacher", 0, 0},
        {"--size", KM_FLAG_INT, &c.size, "student crop size (0: the checkpoint's)", 0, 0},
        {"--split", KM_FLAG_STR, &split, "all, test, val or train (with --split-dir)", 0, 0},
        {"--split-dir", KM_FLAG_STR, &c.split_dir, "folder with train.txt/val.txt/test.txt, e.g. RUN/splits", 0, 0},
        {"--first", KM_FLAG_INT, &c.first, "only the first N images of the split, in id order (0: all)", 0, 0},
        KM_CMD_TEACHER_FLAG("--teacher", &teacher),
        KM_CMD_PROFILE_FLAG("--teacher-profile", &profile),
        {"--box-rule", KM_FLAG_STR, &box_rule, "all, largest or per-component", 0, 0},
        {"--points", KM_FLAG_INT, &points, "guiding points (gt-box+points, student)", 0, 0},
        KM_CMD_CACHE_FLAGS(&cache_dir, &no_cache),
        KM_CMD_THREADS_FLAG(&threads),
        KM_CMD_QUIET_FLAG(&quiet),
        {0}};
    int help = 0;
    km_status s = km_parse_flags("teacher-quality", "--data DIR --out DIR [--prompts gt-box|gt-box+points|student] "
                                 "[--first N] [--box-rule R]", flags, argc, argv, &help);
    if (s || help) return s;
    static const char *const splits[] = {"train", "val", "test", "all"};
    c.split = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(split, splits[i])) c.split = i;
    if (c.split < 0) return km_err(KM_EARG, "--split '%s': expected all, test, val or train", split);
    if (c.split != 3 && !c.split_dir) return km_err(KM_EARG, "--split %s needs --split-dir", split);
    if (c.first < 0) return km_err(KM_EARG, "--first %d: expected >= 0", c.first);
    if (threads < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", threads);
    if ((s = km_tq_prompts_parse(prompts, &c.prompts))) return s;
    char tbuf[4096], dbuf[4096];
    if ((s = km_teacher_resolve(teacher, tbuf, sizeof tbuf, &teacher))) return s;
    if ((s = km_refine_config_from_flags(&c.teacher, teacher, profile, NULL, box_rule, points, cache_dir, no_cache,
                                         dbuf, sizeof dbuf)))
        return s;
    km_set_threads(threads);
    km_tq_result r;
    if ((s = km_teacher_quality_run(&c, quiet ? NULL : stderr, &r))) return s;
    printf("teacher %s (%s prompts, box rule %s) on %d image(s) of %s: mean Dice %.4f +- %.4f, mean IoU %.4f, "
           "global Dice %.4f; %d without a box, %d empty teacher masks; %.1f s\n",
           teacher, prompts, box_rule, r.n, c.data, r.mean_dice, r.std_dice, r.mean_iou, r.global_dice, r.no_box,
           r.empty_teacher, r.seconds);
    if (c.prompts == KM_TQ_STUDENT)
        printf("in the student's %dx%d frame: student Dice %.4f, teacher Dice %.4f (teacher gain %+.4f)\n",
               r.size, r.size, r.student_dice, r.teacher_dice_crop,
               r.teacher_dice_crop - r.student_dice);
    return KM_OK;
}
