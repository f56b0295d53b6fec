/*
 * bench_ggml_vec_dot.c - llama.cpp's one-row CPU dot kernels (ggml type
 * traits: vec_dot against its own quantized activations) for the types of
 * tools/bench_x8_kernels.c: ns per row of K = 2048, best of 20 passes over
 * 1024 rows, 1 thread (IQ2_XXS: random blocks, ggml has no quantizer for it
 * without an importance matrix). A manual measurement, not a test.
 *
 *   L=/path/to/llama.cpp; cc -O2 tools/bench_ggml_vec_dot.c -I$L/ggml/include -L$L/build/bin \
 *      -lggml -lggml-base -lggml-cpu -Wl,-rpath,$L/build/bin -o build/bench_ggml_vec_dot
 */
#include <ggml.h>
#include <ggml-cpu.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  ggml_cpu_init();
  enum ggml_type ts[]={GGML_TYPE_Q4_K,GGML_TYPE_Q2_K,GGML_TYPE_Q3_K,GGML_TYPE_IQ2_XXS,GGML_TYPE_IQ4_NL,GGML_TYPE_Q6_K};
  int K=2048,N=1024;
  float *f=malloc(sizeof(float)*K*N); for(int i=0;i<K*N;i++) f[i]=rand()/(float)RAND_MAX-0.5f;
  float x[2048]; for(int i=0;i<K;i++) x[i]=rand()/(float)RAND_MAX-0.5f;
  for(int ti=0;ti<6;ti++){ enum ggml_type t=ts[ti];
    const struct ggml_type_traits_cpu *tc=ggml_get_type_traits_cpu(t);
    size_t rb=ggml_row_size(t,K); char *w=malloc(rb*N);
    if (t==GGML_TYPE_IQ2_XXS){ for(size_t i=0;i<rb*N;i++) w[i]=rand(); for(size_t o=0;o<rb*N;o+=66){ w[o]=0; w[o+1]=0x20;} }
    else ggml_quantize_chunk(t,f,w,0,N,K,NULL);
    enum ggml_type vt=tc->vec_dot_type; char *a=malloc(ggml_row_size(vt,K));
    ggml_get_type_traits_cpu(vt)->from_float(x,a,K);
    double best=1e9; float s;
    for(int rep=0;rep<20;rep++){double t0=now(); for(int n=0;n<N;n++) tc->vec_dot(K,&s,0,w+rb*n,0,a,0,1); double dt=now()-t0; if(dt<best)best=dt;}
    printf("ggml %-8s vec_dot: %.0f ns/row\n",ggml_type_name(t),best/N*1e9);
  }
}
