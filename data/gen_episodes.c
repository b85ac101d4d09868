// data/gen_episodes.c: the synthetic episode generator (program `gen_episodes`).
//
//   make gen_episodes && ./gen_episodes --seed 1 --episodes 20 --sessions 32 -o data/eval32.json
//
// Writes LoCoMo-format JSON (DESIGN.md section 4): a list of samples, each a conversation of two
// speakers over N sessions, questions with gold answers and evidence dia_ids, and gold facts per
// session in LoCoMo's `observation` field. Same flags, same bytes (all randomness from rng.h).
//
// The world. The two speakers and --people friends they talk about; each person has up to seven
// attributes (data/grammar.h: city, job, employer, pet, car, hobby, partner) whose values come
// from closed pools. A session has --turns turns, alternating speakers. Each turn is chit-chat
// with probability --distractor-share (some chit-chat names values without stating a fact:
// "have you ever been to rome ?"), otherwise an event about one key (person|attribute) not yet
// touched in this session, said in the first person by its owner or in the third person about a
// friend:
//   introduce  the key has no value (never set, or ended)          -> SET fact
//   change     with probability --event-rate, --end-share of them  -> CHANGE fact
//   end        an end where the attribute can end ("i sold my toyota") -> END fact
//   restate    otherwise: said plainly or as a hint amid chit-chat -> SET fact of the same value
// Each event has several phrasings (first and third person); its gold fact is the CANONICAL text
// of data/grammar.h. A key is touched at most once per session, so facts of one chunk never
// conflict with each other.
//
// Extra fields (ignored by LoCoMo tools, read by data/locomo.c):
//   sample.memr2_facts.session_N = [{dia_id, fact, key "person|attr", ends 0|1, event}]
//   qa[i].memr2_type             = current | ended | previous | two-hop
//
// Questions are about the state AT THE HORIZON, as in LoCoMo: every state of every key gets its
// questions, each carrying "memr2_valid_until" (the last session its answer holds), so a reader
// that stops after H sessions asks exactly about the states that hold at H (question_active() in
// data/locomo.h: last_session <= H <= valid_until). Such a question stays true from the session of its
// evidence to the horizon: it is answerable right after that session, and a local re-run of
// session t changes the rewards of the questions with evidence in t. --final-only writes the
// older world (only each key's state at the last session, no valid_until), in which few
// questions are answerable after early sessions. Categories follow the
// real LoCoMo numbering (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial):
//   current value (answer the value)          category 4 (single-hop), evidence: the setting turn
//   ended value   (answer "none")             category 4 (single-hop), evidence: the ending turn
//   previous value "where did X live before V" category 2 (temporal),  evidence: both turns
//   two-hop "where does the owner of the cat live" category 1 (multi-hop), evidence: both facts;
//     asked only when no one else holds the bridge value from the question's first session on.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/grammar.h"
#include "rng.h"

// ---------------------------------------------------------------------------------------------
// Phrasings. {p} the person talked about (third person), {v} the value, {o} the old value.
enum { EV_INTRO, EV_CHANGE, EV_END, EV_RESTATE, EV_HINT, N_EV };
static const char *const EV_NAMES[N_EV] = {"intro", "change", "end", "restate", "hint"};

typedef struct {
    const char *first[N_EV][2];  // first person; NULL entries unused
    const char *third[N_EV][2];
} Phrasing;

static const Phrasing PHRASES[GR_N_ATTRS] = {
    {  // city
     {{"i live in {v} these days .", "my home is in {v} now ."},
      {"we just moved from {o} to {v} !", "i left {o} , i live in {v} now ."},
      {NULL, NULL},
      {"i still live in {v} .", "life in {v} is treating me well ."},
      {"the trams in {v} were late again this morning .", "i love walking around {v} at night ."}},
     {{"{p} lives in {v} .", "{p} has an apartment in {v} ."},
      {"{p} moved from {o} to {v} last week .", "{p} left {o} and lives in {v} now ."},
      {NULL, NULL},
      {"{p} still lives in {v} .", "{p} says {v} is lovely this time of year ."},
      {"{p} sent me photos of {v} in the snow .", "{p} showed me a market in {v} ."}}},
    {  // job
     {{"i work as a {v} .", "i am a {v} by trade ."},
      {"i quit being a {o} , now i am a {v} .", "i changed careers from {o} to {v} ."},
      {"i quit my job as a {o} , i am not working now .", "i retired from being a {o} ."},
      {"being a {v} keeps me busy .", "i am still a {v} ."},
      {"long shift today , the life of a {v} !", "another tiring day as a {v} ."}},
     {{"{p} works as a {v} .", "{p} is a {v} ."},
      {"{p} stopped being a {o} and became a {v} .", "{p} went from {o} to {v} ."},
      {"{p} quit working as a {o} .", "{p} is not a {o} anymore ."},
      {"{p} is still a {v} .", "{p} still works as a {v} ."},
      {"{p} had a rough day at work , typical {v} stuff .", "{p} told me stories of a {v} ."}}},
    {  // employer
     {{"i got a job at {v} .", "i work at {v} these days ."},
      {"i left {o} and joined {v} .", "i switched from {o} to {v} ."},
      {"i left {o} and i am not looking yet .", "i quit {o} last month ."},
      {"things at {v} are busy .", "i am still at {v} ."},
      {"my boss at {v} gave me a new project .", "the office of {v} was freezing today ."}},
     {{"{p} works at {v} .", "{p} got hired by {v} ."},
      {"{p} left {o} for a job at {v} .", "{p} moved from {o} to {v} at work ."},
      {"{p} left {o} last month .", "{p} quit {o} ."},
      {"{p} still works at {v} .", "{p} is still at {v} ."},
      {"{p} complained about the coffee at {v} .", "{p} had a party at {v} ."}}},
    {  // pet
     {{"we adopted a {v} !", "i got a little {v} ."},
      {"i gave my {o} to my aunt and got a {v} .", "our {o} went to a farm , now we have a {v} ."},
      {"sadly my {o} passed away .", "i had to give my {o} away ."},
      {"my {v} is doing great .", "i still have my {v} ."},
      {"my {v} woke me up at five again .", "my {v} chewed my slippers ."}},
     {{"{p} adopted a {v} .", "{p} has a {v} now ."},
      {"{p} gave away the {o} and got a {v} .", "{p} swapped the {o} for a {v} ."},
      {"{p} lost the {o} last week .", "{p} gave the {o} away ."},
      {"{p} still has the {v} .", "the {v} of {p} is doing great ."},
      {"{p} posted a video of the {v} .", "{p} took the {v} to the vet ."}}},
    {  // car
     {{"i bought a {v} .", "i drive a {v} now ."},
      {"i sold my {o} and bought a {v} .", "i traded the {o} for a {v} ."},
      {"i sold my {o} , no car for me now .", "my {o} is gone , i take the bus now ."},
      {"my {v} runs fine .", "i still drive my {v} ."},
      {"my {v} needs new tires .", "i parked my {v} in the rain ."}},
     {{"{p} bought a {v} .", "{p} drives a {v} ."},
      {"{p} sold the {o} and got a {v} .", "{p} traded the {o} for a {v} ."},
      {"{p} sold the {o} and takes the bus .", "{p} has no car since selling the {o} ."},
      {"{p} still drives the {v} .", "{p} kept the {v} ."},
      {"{p} washed the {v} on sunday .", "{p} drove me home in the {v} ."}}},
    {  // hobby
     {{"i picked up {v} recently .", "i have started {v} ."},
      {"i gave up {o} and started {v} .", "no more {o} for me , i do {v} now ."},
      {"i stopped doing {o} , too busy .", "i quit {o} for good ."},
      {"i still love {v} .", "i still do {v} ."},
      {"{v} was so relaxing this weekend .", "i spent all saturday on {v} ."}},
     {{"{p} picked up {v} .", "{p} is into {v} now ."},
      {"{p} dropped {o} for {v} .", "{p} gave up {o} and does {v} now ."},
      {"{p} gave up {o} .", "{p} stopped doing {o} ."},
      {"{p} still does {v} .", "{p} still loves {v} ."},
      {"{p} spent all saturday on {v} .", "{p} talked about {v} for an hour ."}}},
    {  // partner
     {{"i started dating {v} .", "i am seeing {v} these days ."},
      {"i broke up with {o} , now i am seeing {v} .", "{o} and i split , i met {v} ."},
      {"{o} and i broke up .", "i am single again , {o} left ."},
      {"{v} and i are doing well .", "i am still with {v} ."},
      {"{v} cooked dinner for me last night .", "{v} surprised me with flowers ."}},
     {{"{p} is dating {v} .", "{p} started seeing {v} ."},
      {"{p} broke up with {o} and is dating {v} .", "{p} left {o} for {v} ."},
      {"{p} and {o} broke up .", "{p} is single again after {o} ."},
      {"{p} is still with {v} .", "{p} and {v} are doing well ."},
      {"{p} went to a concert with {v} .", "{p} brought {v} to the party ."}}},
};

// Chit-chat: no fact. "{a}" takes a random value of attribute a (digit) to mislead readers that
// match words: the value is named, nothing is stated.
static const char *const CHITCHAT[] = {
    "how was your week ?", "pretty good , thanks for asking .",
    "the weather has been lovely lately .", "i watched a great movie last night .",
    "haha , that sounds fun !", "tell me more about it .", "oh wow , that is big news !",
    "i am so happy for you .", "work has been hectic this month .",
    "did you see the game on sunday ?", "i tried a new recipe for soup .",
    "my neighbors are so loud .", "i need a vacation soon .", "that is wonderful to hear .",
    "i have been reading a good book .", "we should grab coffee sometime .",
    "i slept badly last night .", "the traffic was terrible today .",
    "i finally cleaned the garage .", "what have you been up to ?", "not much , same old .",
    "i am thinking of learning to sing .", "congratulations , you deserve it !",
    "sorry to hear that .", "that must have been hard .", "i went to a concert on friday .",
    "my sister visited last weekend .", "it rained all day here .",
    "i bought new running shoes .", "are you free next week ?",
    "have you ever been to {0} ?", "i saw a funny video of a {3} today .",
    "my cousin wants a {4} someday .", "i read an article about {5} .",
    "a friend of mine is a {1} .", "i heard {2} is hiring .", "is {0} nice in the spring ?",
};
#define N_CHITCHAT ((int)(sizeof CHITCHAT / sizeof CHITCHAT[0]))

static const char *const MONTHS[12] = {"january", "february", "march", "april", "may", "june",
                                       "july", "august", "september", "october", "november",
                                       "december"};
static const int MONTH_DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

// ---------------------------------------------------------------------------------------------
// Options
typedef struct {
    uint64_t seed;
    int episodes, sessions, people, turns;
    double event_rate, end_share, distractor_share;
    int all_states;  // 1 (default): questions about every state; 0 (--final-only): the last
    const char *out;
} GenOpts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: gen_episodes [options] [-o FILE]\n"
            "Synthetic LoCoMo-format episodes (JSON). Same flags, same bytes.\n"
            "  --seed S              random seed (default 1)\n"
            "  --episodes N          conversations to write (default 10)\n"
            "  --sessions H          sessions per conversation, 1..999 (default 32)\n"
            "  --people P            friends talked about besides the two speakers, 0..14 "
            "(default 2)\n"
            "  --turns T             turns per session, 1..999 (default 8)\n"
            "  --event-rate R        probability that a turn about a key that has a value\n"
            "                        changes or ends it instead of restating it (default 0.6)\n"
            "  --end-share E         share of those events that end the value, where the\n"
            "                        attribute can end (default 0.35)\n"
            "  --distractor-share D  share of chit-chat turns without a fact (default 0.5)\n"
            "  --all-states          (the default) ask about every state of each key, each\n"
            "                        question carrying memr2_valid_until, the last session its\n"
            "                        answer holds: a reader at horizon H asks about the state at\n"
            "                        H (question_active in data/locomo.h)\n"
            "  --final-only          ask only about each key's state at the last session, with\n"
            "                        no memr2_valid_until (the world before 2026-12-02)\n"
            "  -o, --output FILE     output file (default: standard output)\n"
            "  -h, --help            this text\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "gen_episodes: %s wants an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_prob(const char *flag, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0.0 && v <= 1.0)) {
        fprintf(stderr, "gen_episodes: %s wants a number in [0, 1], got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// World state
typedef struct {
    int type;     // GR_SET / GR_CHANGE / GR_END
    int v, o;     // value indices (v: the new value, o: the old one), -1 if none
    int session;  // session in which the state began
    int turn;     // its turn (1-based)
} KeyState;

typedef struct {
    KeyState *hist;  // states in time order
    int n, cap;
    int touched;     // last session in which an event touched the key
} Key;

// The current value of a key (-1: none) and of a state.
static int state_value(const KeyState *s) { return s->type == GR_END ? -1 : s->v; }
static int key_value(const Key *k) { return k->n ? state_value(&k->hist[k->n - 1]) : -1; }

static int key_push(Key *k, KeyState s) {
    if (k->n == k->cap) {
        int nc = k->cap ? 2 * k->cap : 4;
        KeyState *h = realloc(k->hist, (size_t)nc * sizeof *h);
        if (!h) return -1;
        k->hist = h, k->cap = nc;
    }
    k->hist[k->n++] = s;
    return 0;
}

static void dia_str(char *buf, size_t n, int session, int turn) {
    snprintf(buf, n, "D%d:%d", session, turn);
}

// ---------------------------------------------------------------------------------------------
// One episode
static cJSON *add_str(cJSON *obj, const char *k, const char *v) {
    return cJSON_AddStringToObject(obj, k, v);
}

static int rand_value_except(Rng *r, int except) {
    int v;
    do v = (int)rng_below(r, GR_N_VALUES);
    while (v == except);
    return v;
}

// Evidence array of one or two dia_ids.
static cJSON *evidence_json(int s1, int t1, int s2, int t2) {
    cJSON *a = cJSON_CreateArray();
    char b[32];
    if (s1 > 0) {
        dia_str(b, sizeof b, s1, t1);
        cJSON_AddItemToArray(a, cJSON_CreateString(b));
    }
    if (s2 > 0) {
        dia_str(b, sizeof b, s2, t2);
        cJSON_AddItemToArray(a, cJSON_CreateString(b));
    }
    return a;
}

// valid_until > 0: the last session at which the answer holds (written as memr2_valid_until).
static void add_question(cJSON *qa, const char *q, const char *answer, cJSON *evidence, int cat,
                         const char *type, int valid_until) {
    cJSON *o = cJSON_CreateObject();
    add_str(o, "question", q);
    add_str(o, "answer", answer);
    cJSON_AddItemToObject(o, "evidence", evidence);
    cJSON_AddNumberToObject(o, "category", cat);
    add_str(o, "memr2_type", type);
    if (valid_until > 0) cJSON_AddNumberToObject(o, "memr2_valid_until", valid_until);
    cJSON_AddItemToArray(qa, o);
}

// The last session in which state i of key k holds (S: the episode's last session).
static int state_end(const Key *k, int i, int S) {
    return i + 1 < k->n ? k->hist[i + 1].session - 1 : S;
}

// Does the key hold value v at any time in sessions [from, to]?
static int holds_in(const Key *k, int v, int from, int to, int S) {
    for (int i = 0; i < k->n; i++) {
        if (state_end(k, i, S) < from || k->hist[i].session > to) continue;
        if (state_value(&k->hist[i]) == v) return 1;
    }
    return 0;
}

static cJSON *gen_episode(const GenOpts *o, int index, Rng *r) {
    int P = 2 + o->people;
    int names[GR_N_NAMES];
    for (int i = 0; i < GR_N_NAMES; i++) names[i] = i;
    for (int i = 0; i < P; i++) {  // partial Fisher-Yates: P distinct people
        int j = i + (int)rng_below(r, (uint32_t)(GR_N_NAMES - i));
        int t = names[i];
        names[i] = names[j], names[j] = t;
    }
    Key *keys = calloc((size_t)P * GR_N_ATTRS, sizeof *keys);  // (P, GR_N_ATTRS)
    if (!keys) return NULL;
    for (int i = 0; i < P * GR_N_ATTRS; i++) keys[i].touched = -1;

    cJSON *sample = cJSON_CreateObject();
    char buf[512], buf2[512], id[64];
    snprintf(id, sizeof id, "gen-%llu-%d", (unsigned long long)o->seed, index);
    add_str(sample, "sample_id", id);
    cJSON *conv = cJSON_AddObjectToObject(sample, "conversation");
    const char *spk[2] = {GR_NAMES[names[0]], GR_NAMES[names[1]]};
    add_str(conv, "speaker_a", spk[0]);
    add_str(conv, "speaker_b", spk[1]);
    cJSON *qa = cJSON_AddArrayToObject(sample, "qa");
    cJSON *obs = cJSON_AddObjectToObject(sample, "observation");
    cJSON *mfacts = cJSON_AddObjectToObject(sample, "memr2_facts");

    int day = (int)rng_below(r, 365), year = 2022 + (int)rng_below(r, 3);
    for (int s = 1; s <= o->sessions; s++) {
        // the date: a few days to a few weeks after the previous session
        if (s > 1) day += 1 + (int)rng_below(r, 20);
        while (day >= 365) day -= 365, year++;
        int m = 0, d = day;
        while (d >= MONTH_DAYS[m]) d -= MONTH_DAYS[m++];
        int hour = 1 + (int)rng_below(r, 12), minute = (int)rng_below(r, 60);
        snprintf(buf, sizeof buf, "%d:%02d %s on %d %s, %d", hour, minute,
                 rng_below(r, 2) ? "pm" : "am", d + 1, MONTHS[m], year);
        snprintf(buf2, sizeof buf2, "session_%d_date_time", s);
        add_str(conv, buf2, buf);
        snprintf(buf2, sizeof buf2, "session_%d", s);
        cJSON *turns = cJSON_AddArrayToObject(conv, buf2);
        snprintf(buf2, sizeof buf2, "session_%d_observation", s);
        cJSON *sobs = cJSON_AddObjectToObject(obs, buf2);
        cJSON *sobs_spk[2] = {cJSON_AddArrayToObject(sobs, spk[0]),
                              cJSON_AddArrayToObject(sobs, spk[1])};
        snprintf(buf2, sizeof buf2, "session_%d", s);
        cJSON *smf = cJSON_AddArrayToObject(mfacts, buf2);
        int first = (int)rng_below(r, 2);  // who opens the session

        for (int t = 1; t <= o->turns; t++) {
            int who = (first + t - 1) % 2;  // index of the speaking speaker
            char text[512];
            int is_event = rng_double(r) >= o->distractor_share;
            int person = -1, attr = -1;
            if (is_event) {
                // subject: the speaker (first person) or a friend (third person)
                person = (o->people > 0 && rng_double(r) < 0.35)
                             ? 2 + (int)rng_below(r, (uint32_t)o->people)
                             : who;
                int cand[GR_N_ATTRS], nc = 0;
                for (int a = 0; a < GR_N_ATTRS; a++)
                    if (keys[person * GR_N_ATTRS + a].touched != s) cand[nc++] = a;
                if (nc == 0) is_event = 0;
                else attr = cand[rng_below(r, (uint32_t)nc)];
            }
            if (!is_event) {
                const char *tm = CHITCHAT[rng_below(r, N_CHITCHAT)];
                // fill "{digit}" with a random value of that attribute
                size_t k = 0;
                for (const char *c = tm; *c && k + 32 < sizeof text;) {
                    if (c[0] == '{' && c[1] >= '0' && c[1] <= '6' && c[2] == '}') {
                        const char *v = GR_ATTRS[c[1] - '0'].values[rng_below(r, GR_N_VALUES)];
                        k += (size_t)snprintf(text + k, sizeof text - k, "%s", v);
                        c += 3;
                    } else {
                        text[k++] = *c++;
                    }
                }
                text[k] = '\0';
            } else {
                Key *key = &keys[person * GR_N_ATTRS + attr];
                const GrAttr *A = &GR_ATTRS[attr];
                int cur = key_value(key);
                int ev;
                KeyState st = {.type = GR_SET, .v = -1, .o = -1, .session = s, .turn = t};
                if (cur < 0) {
                    ev = EV_INTRO;
                    st.v = rand_value_except(r, -1);
                } else if (rng_double(r) < o->event_rate) {
                    if (A->can_end && rng_double(r) < o->end_share) {
                        ev = EV_END;
                        st.type = GR_END, st.o = cur;
                    } else {
                        ev = EV_CHANGE;
                        st.type = GR_CHANGE, st.o = cur, st.v = rand_value_except(r, cur);
                    }
                } else {
                    ev = rng_below(r, 2) ? EV_HINT : EV_RESTATE;
                    st.v = cur;
                }
                key->touched = s;
                if (ev != EV_RESTATE && ev != EV_HINT && key_push(key, st) != 0) {
                    cJSON_Delete(sample);
                    sample = NULL;
                    goto done;
                }
                const char *pname = GR_NAMES[names[person]];
                const char *v = st.v >= 0 ? A->values[st.v] : "";
                const char *ov = st.o >= 0 ? A->values[st.o] : "";
                const Phrasing *ph = &PHRASES[attr];
                const char *tm = person == who ? ph->first[ev][rng_below(r, 2)]
                                               : ph->third[ev][rng_below(r, 2)];
                gr_fill(text, sizeof text, tm, pname, v, ov);
                // the gold fact: canonical text; restatements restate the current value
                char fact[256], keystr[64], dia[32];
                int ftype = (ev == EV_RESTATE || ev == EV_HINT || ev == EV_INTRO) ? GR_SET : st.type;
                gr_format_fact(fact, sizeof fact, ftype, pname, attr, v, ov);
                snprintf(keystr, sizeof keystr, "%s|%s", pname, A->name);
                dia_str(dia, sizeof dia, s, t);
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateString(fact));
                cJSON_AddItemToArray(pair, cJSON_CreateString(dia));
                cJSON_AddItemToArray(sobs_spk[who], pair);
                cJSON *mf = cJSON_CreateObject();
                add_str(mf, "dia_id", dia);
                add_str(mf, "fact", fact);
                add_str(mf, "key", keystr);
                cJSON_AddNumberToObject(mf, "ends", ev == EV_END);
                add_str(mf, "event", EV_NAMES[ev]);
                cJSON_AddItemToArray(smf, mf);
            }
            cJSON *turn = cJSON_CreateObject();
            add_str(turn, "speaker", spk[who]);
            dia_str(buf, sizeof buf, s, t);
            add_str(turn, "dia_id", buf);
            add_str(turn, "text", text);
            cJSON_AddItemToArray(turns, turn);
        }
    }

    // Questions about every state of every key, each valid from the session that set it to the
    // last session before the key changed again (--final-only: the last state only).
    int S = o->sessions;
    for (int p = 0; p < P; p++) {
        const char *pname = GR_NAMES[names[p]];
        for (int a = 0; a < GR_N_ATTRS; a++) {
            const Key *k = &keys[p * GR_N_ATTRS + a];
            const GrAttr *A = &GR_ATTRS[a];
            for (int i = o->all_states ? 0 : k->n - 1; i >= 0 && i < k->n; i++) {
                const KeyState *f = &k->hist[i];
                int until = o->all_states ? state_end(k, i, S) : 0;
                gr_fill(buf, sizeof buf, A->q_cur, pname, NULL, NULL);
                if (f->type == GR_END) {
                    add_question(qa, buf, "none", evidence_json(f->session, f->turn, 0, 0), 4,
                                 "ended", until);
                    continue;
                }
                add_question(qa, buf, A->values[f->v], evidence_json(f->session, f->turn, 0, 0),
                             4, "current", until);
                if (f->type == GR_CHANGE) {
                    const KeyState *pv = &k->hist[i - 1];
                    gr_fill(buf, sizeof buf, A->q_prev, pname, A->values[f->v], NULL);
                    add_question(qa, buf, A->values[f->o],
                                 evidence_json(pv->session, pv->turn, f->session, f->turn), 2,
                                 "previous", until);
                }
            }
        }
    }
    // Two-hop: the target attribute of the unique holder of a bridge value, over the sessions
    // where both states hold and nobody else holds the bridge value.
    for (int p = 0; p < P; p++) {
        for (int b = 0; b < GR_N_ATTRS; b++) {
            if (!GR_ATTRS[b].desc) continue;
            const Key *kb = &keys[p * GR_N_ATTRS + b];
            for (int ib = o->all_states ? 0 : kb->n - 1; ib >= 0 && ib < kb->n; ib++) {
                const KeyState *fb = &kb->hist[ib];
                int v = state_value(fb);
                if (v < 0) continue;
                for (int t = 0; t < GR_N_ATTRS; t++) {
                    if (!GR_ATTRS[t].hop_target) continue;
                    const Key *kt = &keys[p * GR_N_ATTRS + t];
                    for (int it = o->all_states ? 0 : kt->n - 1; it >= 0 && it < kt->n; it++) {
                        const KeyState *ft = &kt->hist[it];
                        int vt = state_value(ft);
                        if (vt < 0) continue;
                        int from = fb->session > ft->session ? fb->session : ft->session;
                        int eb = state_end(kb, ib, S), et = state_end(kt, it, S);
                        int to = eb < et ? eb : et;
                        if (from > to) continue;
                        int unique = 1;
                        for (int q = 0; q < P && unique; q++)
                            if (q != p && holds_in(&keys[q * GR_N_ATTRS + b], v, from, to, S))
                                unique = 0;
                        if (!unique) continue;
                        char desc[128];
                        gr_fill(desc, sizeof desc, GR_ATTRS[b].desc, NULL, GR_ATTRS[b].values[v],
                                NULL);
                        gr_fill(buf, sizeof buf, GR_ATTRS[t].q_cur, desc, NULL, NULL);
                        add_question(qa, buf, GR_ATTRS[t].values[vt],
                                     evidence_json(fb->session, fb->turn, ft->session, ft->turn),
                                     1, "two-hop", o->all_states ? to : 0);
                    }
                }
            }
        }
    }
done:
    for (int i = 0; i < P * GR_N_ATTRS; i++) free(keys[i].hist);
    free(keys);
    return sample;
}

int main(int argc, char **argv) {
    GenOpts o = {.seed = 1, .episodes = 10, .sessions = 32, .people = 2, .turns = 8,
                 .event_rate = 0.6, .end_share = 0.35, .distractor_share = 0.5, .all_states = 1,
                 .out = NULL};
    enum { OPT_SEED = 256, OPT_EPISODES, OPT_SESSIONS, OPT_PEOPLE, OPT_TURNS, OPT_EVENT, OPT_DISTR,
           OPT_ALL, OPT_FINAL, OPT_END };
    static const struct option longopts[] = {
        {"seed", required_argument, 0, OPT_SEED},
        {"episodes", required_argument, 0, OPT_EPISODES},
        {"sessions", required_argument, 0, OPT_SESSIONS},
        {"people", required_argument, 0, OPT_PEOPLE},
        {"turns", required_argument, 0, OPT_TURNS},
        {"event-rate", required_argument, 0, OPT_EVENT},
        {"distractor-share", required_argument, 0, OPT_DISTR},
        {"end-share", required_argument, 0, OPT_END},
        {"all-states", no_argument, 0, OPT_ALL},
        {"final-only", no_argument, 0, OPT_FINAL},
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case OPT_SEED: {
            char *end;
            o.seed = strtoull(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || optarg[0] == '-') {
                fprintf(stderr, "gen_episodes: --seed wants a non-negative integer, got '%s'\n",
                        optarg);
                rc = -1;
            }
            break;
        }
        case OPT_EPISODES: rc = parse_long("--episodes", optarg, 1, 1000000, &v); o.episodes = (int)v; break;
        case OPT_SESSIONS: rc = parse_long("--sessions", optarg, 1, 999, &v); o.sessions = (int)v; break;
        case OPT_PEOPLE: rc = parse_long("--people", optarg, 0, GR_N_NAMES - 2, &v); o.people = (int)v; break;
        case OPT_TURNS: rc = parse_long("--turns", optarg, 1, 999, &v); o.turns = (int)v; break;
        case OPT_EVENT: rc = parse_prob("--event-rate", optarg, &o.event_rate); break;
        case OPT_DISTR: rc = parse_prob("--distractor-share", optarg, &o.distractor_share); break;
        case OPT_END: rc = parse_prob("--end-share", optarg, &o.end_share); break;
        case OPT_ALL: o.all_states = 1; break;
        case OPT_FINAL: o.all_states = 0; break;
        case 'o': o.out = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rc != 0) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "gen_episodes: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    Rng r;
    rng_seed(&r, o.seed);
    cJSON *root = cJSON_CreateArray();
    if (!root) return 1;
    for (int e = 0; e < o.episodes; e++) {
        cJSON *s = gen_episode(&o, e, &r);
        if (!s) {
            fprintf(stderr, "gen_episodes: out of memory in episode %d\n", e);
            cJSON_Delete(root);
            return 1;
        }
        cJSON_AddItemToArray(root, s);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "gen_episodes: out of memory printing the JSON\n");
        return 1;
    }
    FILE *f = o.out ? fopen(o.out, "wb") : stdout;
    if (!f) {
        perror(o.out);
        free(text);
        return 1;
    }
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
    if (o.out) bad |= fclose(f) != 0;
    else bad |= fflush(f) != 0;
    free(text);
    if (bad) {
        fprintf(stderr, "gen_episodes: write error on %s\n", o.out ? o.out : "stdout");
        return 1;
    }
    return 0;
}
