// Golden tokenizer outputs from llama.cpp, for tests/tokenizer_golden.rs.
// Built and run by tools/tokenizer_golden.sh against a llama.cpp build (public llama.h API only).
//
// usage: tokenizer_golden VOCAB.gguf PROMPTS [encode-only|digest]
// PROMPTS holds texts separated by "\n__ggml_vocab_test__\n" (as llama.cpp's .inp files).
// Output, one record per line (ids in decimal, byte strings in hex):
//   meta n_vocab bos eos eot add_bos add_eos       (-1 for a missing id)
//   eog ID...                                       all ids with llama_vocab_is_eog
//   pieces SPECIAL FNV64                             FNV-1a over (u32le len, bytes) of every piece
//   piece ID HEX_SPECIAL HEX_PLAIN                   explicit pieces of some ids
//   I eAP ID...                                      text I encoded with add_special=A, parse_special=P
//   I dec HEX                                        detokenize(e11, remove_special=0, unparse_special=1)
//   I plain HEX                                      detokenize(e11, remove_special=1, unparse_special=0)
// With "encode-only": just the e00 and e11 records of each text (for large random sets).
// With "digest": one line "digest N FNV64" of the e11 ids of the whole file as one text
// (FNV-1a over the ids as u32 little-endian).
#include "llama.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static std::string hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out += d[c >> 4];
        out += d[c & 15];
    }
    return out.empty() ? "-" : out;
}

static std::vector<llama_token> encode(const llama_vocab * v, const std::string & text, bool add, bool parse) {
    std::vector<llama_token> ids(text.size() + 8);
    int n = llama_tokenize(v, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(), add, parse);
    if (n < 0) {
        ids.resize(-n);
        n = llama_tokenize(v, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(), add, parse);
    }
    ids.resize(n);
    return ids;
}

static std::string detok(const llama_vocab * v, const std::vector<llama_token> & ids, bool remove, bool unparse) {
    std::string s(ids.size() * 16 + 16, '\0');
    int n = llama_detokenize(v, ids.data(), (int32_t) ids.size(), &s[0], (int32_t) s.size(), remove, unparse);
    if (n < 0) {
        s.resize(-n);
        n = llama_detokenize(v, ids.data(), (int32_t) ids.size(), &s[0], (int32_t) s.size(), remove, unparse);
    }
    s.resize(n);
    return s;
}

static std::string piece(const llama_vocab * v, llama_token id, bool special) {
    std::string s(64, '\0');
    int n = llama_token_to_piece(v, id, &s[0], (int32_t) s.size(), 0, special);
    if (n < 0) {
        s.resize(-n);
        n = llama_token_to_piece(v, id, &s[0], (int32_t) s.size(), 0, special);
    }
    s.resize(n);
    return s;
}

int main(int argc, char ** argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s VOCAB.gguf PROMPTS [encode-only|digest]\n", argv[0]);
        return 1;
    }
    const bool encode_only = argc == 4 && std::string(argv[3]) == "encode-only";
    const bool digest = argc == 4 && std::string(argv[3]) == "digest";
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * v = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(v);

    if (digest) {
        std::ifstream f(argv[2], std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        const auto ids = encode(v, ss.str(), true, true);
        uint64_t h = 1469598103934665603ull;
        for (auto id : ids) {
            for (int k = 0; k < 4; k++) {
                h = (h ^ (((uint32_t) id >> (8 * k)) & 0xff)) * 1099511628211ull;
            }
        }
        printf("digest %zu %llu\n", ids.size(), (unsigned long long) h);
        return 0;
    }
    if (!encode_only) {
    printf("meta %d %d %d %d %d %d\n", n_vocab, llama_vocab_bos(v), llama_vocab_eos(v), llama_vocab_eot(v),
           (int) llama_vocab_get_add_bos(v), (int) llama_vocab_get_add_eos(v));
    printf("eog");
    for (int i = 0; i < n_vocab; i++) {
        if (llama_vocab_is_eog(v, i)) {
            printf(" %d", i);
        }
    }
    printf("\n");
    for (int special = 0; special < 2; special++) {
        uint64_t h = 1469598103934665603ull;
        auto eat = [&](unsigned char c) { h = (h ^ c) * 1099511628211ull; };
        for (int i = 0; i < n_vocab; i++) {
            const std::string p = piece(v, i, special);
            const uint32_t len = (uint32_t) p.size();
            for (int k = 0; k < 4; k++) {
                eat((unsigned char) (len >> (8 * k)));
            }
            for (unsigned char c : p) {
                eat(c);
            }
        }
        printf("pieces %d %llu\n", special, (unsigned long long) h);
    }
    for (int i = 0; i < n_vocab; i += (i < 300 ? 1 : 997)) {
        printf("piece %d %s %s\n", i, hex(piece(v, i, true)).c_str(), hex(piece(v, i, false)).c_str());
    }
    }

    std::ifstream f(argv[2], std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string raw = ss.str();
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> texts;
    size_t pos = 0;
    while (pos < raw.size()) {
        size_t next = raw.find(sep, pos);
        if (next == std::string::npos) {
            texts.push_back(raw.substr(pos));
            break;
        }
        texts.push_back(raw.substr(pos, next - pos));
        pos = next + sep.size();
    }
    for (size_t t = 0; t < texts.size(); t++) {
        for (int a = 0; a < 2; a++) {
            for (int p = 0; p < 2; p++) {
                if (encode_only && a != p) {
                    continue;
                }
                printf("%zu e%d%d", t, a, p);
                for (auto id : encode(v, texts[t], a, p)) {
                    printf(" %d", id);
                }
                printf("\n");
            }
        }
        if (encode_only) {
            continue;
        }
        const auto ids = encode(v, texts[t], true, true);
        printf("%zu dec %s\n", t, hex(detok(v, ids, false, true)).c_str());
        printf("%zu plain %s\n", t, hex(detok(v, ids, true, false)).c_str());
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
