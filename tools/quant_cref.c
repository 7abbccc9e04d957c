// C reference for meki's quantizers: ggml's own quantize_row_*_ref, linked
// from a llama.cpp build (libggml-base.a). Used by the optional test
// `quantize_matches_ggml_c_reference` in tests/quant_formats.rs:
//
//   B=/path/to/llama.cpp/build
//   gcc -O2 tools/quant_cref.c $B/ggml/src/libggml-base.a -lm -lpthread -fopenmp -lstdc++ -o target/quant_cref
//   MEKI_QUANT_CREF=target/quant_cref cargo test --release --test quant_formats
//
// usage: cref TYPE in.f32 out.bin   (TYPE = q4_0 q4_1 q5_0 q5_1 q8_0 q8_1 q4_K q5_K q6_K q8_K f16 bf16)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
void quantize_row_q4_0_ref(const float*, void*, int64_t);
void quantize_row_q4_1_ref(const float*, void*, int64_t);
void quantize_row_q5_0_ref(const float*, void*, int64_t);
void quantize_row_q5_1_ref(const float*, void*, int64_t);
void quantize_row_q8_0_ref(const float*, void*, int64_t);
void quantize_row_q8_1_ref(const float*, void*, int64_t);
void quantize_row_q4_K_ref(const float*, void*, int64_t);
void quantize_row_q5_K_ref(const float*, void*, int64_t);
void quantize_row_q6_K_ref(const float*, void*, int64_t);
void quantize_row_q8_K_ref(const float*, void*, int64_t);
void ggml_fp32_to_fp16_row(const float*, void*, int64_t);
void ggml_fp32_to_bf16_row_ref(const float*, void*, int64_t);
int main(int argc, char**argv){
  FILE*f=fopen(argv[2],"rb"); fseek(f,0,SEEK_END); long n=ftell(f)/4; fseek(f,0,SEEK_SET);
  float*x=malloc(n*4); fread(x,4,n,f); fclose(f);
  const char*t=argv[1]; long bs=0,ts=0; void (*fn)(const float*,void*,int64_t)=0;
#define T(name,b,s,func) if(!strcmp(t,name)){bs=b;ts=s;fn=func;}
  T("q4_0",32,18,quantize_row_q4_0_ref) T("q4_1",32,20,quantize_row_q4_1_ref) T("q5_0",32,22,quantize_row_q5_0_ref)
  T("q5_1",32,24,quantize_row_q5_1_ref) T("q8_0",32,34,quantize_row_q8_0_ref) T("q8_1",32,36,quantize_row_q8_1_ref)
  T("q4_K",256,144,quantize_row_q4_K_ref) T("q5_K",256,176,quantize_row_q5_K_ref) T("q6_K",256,210,quantize_row_q6_K_ref)
  T("q8_K",256,292,quantize_row_q8_K_ref) T("f16",1,2,ggml_fp32_to_fp16_row) T("bf16",1,2,ggml_fp32_to_bf16_row_ref)
  if(!fn){fprintf(stderr,"bad type\n");return 2;}
  size_t nb=(n/bs)*ts; unsigned char*y=calloc(nb,1); fn(x,y,n);
  f=fopen(argv[3],"wb"); fwrite(y,1,nb,f); fclose(f); return 0;
}
