/* test_prompt_file.c - the SAM prompts file (models/prompt_file.h): CSV and
 * JSON read into the same prompts, and every bad file fails naming the file
 * and the line (CSV) or the entry (JSON). */
#include "test.h"

#include "../src/models/prompt_file.h"

#include <string.h>

static const char *put(const char *name, const char *text) {
    static char path[8][1024];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 1024, "%s/%s", km_test_tmpdir(), name);
    if (km_write_file_atomic(p, text, strlen(text))) km_test_fail(__FILE__, __LINE__, "cannot write %s", p);
    return p;
}

typedef struct {
    const char *text, *needle;
    km_status code;
} bad_file;

/* Writes case i as bad<i+1>.<ext> and expects its load to fail as said,
 * leaving the list empty. */
static void expect_bad(const bad_file *cases, size_t n, const char *ext) {
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.%s", (int)i + 1, ext);
        km_prompt_list l;
        CHECK_ERR(km_prompt_file_load(put(name, cases[i].text), &l), cases[i].code, cases[i].needle);
        CHECK(l.n == 0 && l.items == NULL);
    }
}

/* The same two images' prompts, as CSV (with a header, a comment, a blank
 * line and CRLF ends) and as JSON. */
KM_TEST(prompt_file_csv_and_json_agree) {
    const char *csv = put("p.csv", "image,kind,a,b,c,d\r\n# comment\r\n\r\n"
                                   "a.png,point,120,95\r\nb.png,box,10,20,200,160.5\r\na.png,point,40,150,0\r\n");
    const char *json = put("p.json", "{\"a.png\": {\"points\": [[120,95],[40,150,0]]},"
                                     " \"b.png\": {\"box\": [10,20,200,160.5]}}");
    const char *paths[2] = {csv, json};
    for (int f = 0; f < 2; f++) {
        km_prompt_list l;
        CHECK_OK(km_prompt_file_load(paths[f], &l));
        CHECK(l.n == 2);
        const km_prompt_set *a = km_prompt_list_find(&l, "a.png"), *b = km_prompt_list_find(&l, "b.png");
        CHECK(a && b && !km_prompt_list_find(&l, "c.png"));
        if (!a || !b) continue;
        CHECK(a->n == 2 && !a->has_box);
        CHECK(a->xy[0] == 120 && a->xy[1] == 95 && a->label[0] == 1);
        CHECK(a->xy[2] == 40 && a->xy[3] == 150 && a->label[1] == 0);
        CHECK(b->n == 0 && b->has_box);
        CHECK(b->box[0] == 10 && b->box[1] == 20 && b->box[2] == 200 && b->box[3] == 160.5f);
        km_sam_prompts pr = km_prompt_set_sam(a, NULL, 1);
        CHECK(pr.n_points == 2 && pr.points == a->xy && pr.labels == a->label && !pr.box && pr.multimask == 1);
        pr = km_prompt_set_sam(b, NULL, 0);
        CHECK(pr.n_points == 0 && !pr.points && pr.box == b->box);
        km_prompt_list_free(&l);
    }
}

/* Flag values: "x,y[,label]" and "x0,y0,x1,y1". */
KM_TEST(prompt_file_flag_values) {
    km_prompt_set ps = {0};
    CHECK_OK(km_prompt_parse_point("--point", "3.5,4", &ps));
    CHECK_OK(km_prompt_parse_point("--point", "7,8,0", &ps));
    CHECK(ps.n == 2 && ps.xy[0] == 3.5f && ps.xy[1] == 4 && ps.label[0] == 1 && ps.xy[2] == 7 && ps.label[1] == 0);
    CHECK_ERR(km_prompt_parse_point("--point", "1,2,3,4", &ps), KM_EARG,
              "--point '1,2,3,4': expected 2 or 3 comma-separated numbers");
    CHECK_ERR(km_prompt_parse_point("--point", "1,2,2", &ps), KM_EARG, "label must be 1 (foreground) or 0");
    CHECK_ERR(km_prompt_parse_point("--point", "1,nan", &ps), KM_EARG, "expected 2 or 3");
    CHECK_OK(km_prompt_parse_box("--box", "1,2,30,40", &ps));
    CHECK(ps.has_box && ps.box[2] == 30);
    CHECK_ERR(km_prompt_parse_box("--box", "1,2,30,40", &ps), KM_EARG, "--box: a second box for the same image");
    CHECK(ps.n == 2); /* failed calls added nothing */
    km_prompt_set_free(&ps);
    km_prompt_set b2 = {0};
    CHECK_ERR(km_prompt_parse_box("--box", "1,2,30", &b2), KM_EARG, "--box '1,2,30': expected 4 comma-separated numbers");
    km_prompt_set_free(&b2);
}

/* Each bad CSV fails with KM_EFORMAT / KM_EARG naming FILE:LINE. */
KM_TEST(prompt_file_bad_csv_names_file_and_line) {
    static const bad_file cases[] = {
        {"a.png,point,1,2\na.png,circle,1,2\n", "bad1.csv:2: prompt kind 'circle', expected 'point' or 'box'", KM_EFORMAT},
        {"image,kind\na.png,point,1\n", "bad2.csv:2 '1': expected 2 or 3 comma-separated numbers", KM_EARG},
        {"a.png,box,1,2,3,4\n#\na.png,box,1,2,3,4\n", "bad3.csv:3: a second box for the same image", KM_EARG},
        {"\"a,b.png\",point,1,2\n", "bad4.csv:1: quoted CSV fields are not supported", KM_EFORMAT},
        {"a.png,point,1,2,5\n", "bad5.csv:1 '1,2,5': label must be 1 (foreground) or 0 (background)", KM_EARG},
        {"a.png\n", "bad6.csv:1: 'a.png': expected image,point,x,y[,label] or image,box,x0,y0,x1,y1", KM_EFORMAT},
        {",point,1,2\n", "bad7.csv:1: ',point,1,2': expected image,point", KM_EFORMAT},
    };
    expect_bad(cases, sizeof cases / sizeof cases[0], "csv");
    km_prompt_list l;
    const char nul[] = "a.png,point,1,2\n\0x";
    char path[1024];
    snprintf(path, sizeof path, "%s/nul.csv", km_test_tmpdir());
    CHECK_OK(km_write_file_atomic(path, nul, sizeof nul - 1));
    CHECK_ERR(km_prompt_file_load(path, &l), KM_EFORMAT, "nul.csv: NUL byte in a CSV file");
    CHECK_ERR(km_prompt_file_load(put("p.txt", "a.png,point,1,2\n"), &l), KM_EARG, "p.txt: expected a .csv or .json file");
    snprintf(path, sizeof path, "%s/absent.csv", km_test_tmpdir());
    CHECK(km_prompt_file_load(path, &l) != KM_OK && strstr(km_errmsg(), "absent.csv"));
}

/* Each bad JSON fails naming the file and the entry. */
KM_TEST(prompt_file_bad_json_names_file_and_entry) {
    static const bad_file cases[] = {
        {"[1, 2]", "bad1.json: expected an object {\"image.png\"", KM_EFORMAT},
        {"{\"a.png\": [1, 2]}", "bad2.json: \"a.png\": expected an object with \"points\" and/or \"box\", found a", KM_EFORMAT},
        {"{\"a.png\": {\"box\": [1, 2, 3]}}", "bad3.json: \"a.png\".box: expected an array of 4 numbers", KM_EFORMAT},
        {"{\"a.png\": {\"points\": [[1, 2], [3, 4, 7]]}}", "bad4.json: \"a.png\".points[1]: label 7, expected 1", KM_EARG},
        {"{\"a.png\": {\"points\": [[1, \"x\"]]}}", "bad5.json: \"a.png\".points[0]: element 1 is a string, expected a number",
         KM_EFORMAT},
        {"{\"a.png\": {\"pts\": []}}", "bad6.json: \"a.png\": unknown key \"pts\", expected \"points\" or \"box\"", KM_EFORMAT},
        {"{\"a.png\": {\"box\": [1,2,3,4]}, \"a.png\": {}}", "bad7.json: \"a.png\" appears twice", KM_EFORMAT},
        {"{\"a.png\": {\"points\": 3}}", "bad8.json: \"a.png\".points: expected an array of [x, y, label] points", KM_EFORMAT},
        {"{\"a.png\": ", "bad9.json: invalid JSON at byte 10: unexpected end of text", KM_EFORMAT},
    };
    expect_bad(cases, sizeof cases / sizeof cases[0], "json");
}
