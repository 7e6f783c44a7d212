/* gemm_blocks.c - what cutting one sgemm into nb blocks of rows (or columns) of C,
 * run one after another on one thread, costs against one call (the median ratio
 * of 41 interleaved pairs), for the benchmark sizes' products.
 *   gcc -O2 bench/dev/gemm_blocks.c -o /tmp/gemm_blocks -ldl
 *   /tmp/gemm_blocks $(python -c "import scipy_openblas32 as s, os; print(os.path.join(s.get_lib_dir(), s.get_library(True)))") scipy_sgemm_
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef void (*sgemm_t)(char*,char*,int*,int*,int*,float*,float*,int*,float*,int*,float*,float*,int*);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static sgemm_t G;
static void rm(int ta,int tb,int M,int N,int K,const float*A,int lda,const float*B,int ldb,float*C,int ldc){
  char opa=tb?'T':'N',opb=ta?'T':'N'; int m=N,n=M,k=K; float one=1,zero=0;
  G(&opa,&opb,&m,&n,&k,&one,(float*)B,&ldb,(float*)A,&lda,&zero,C,&ldc);}
static void split(int ta,int tb,int M,int N,int K,const float*A,int lda,const float*B,int ldb,float*C,int ldc,int nb){
  int rows = M>=N; int tot = rows?M:N; int units=(tot+15)/16;
  for(int p=0;p<nb;p++){ int i0=units*p/nb*16, i1=units*(p+1)/nb*16; if(i1>tot)i1=tot; if(i1<=i0)continue;
    if(rows) rm(ta,tb,i1-i0,N,K, A+(ta?i0:(long)i0*lda),lda,B,ldb,C+(long)i0*ldc,ldc);
    else rm(ta,tb,M,i1-i0,K,A,lda,B+(tb?(long)i0*ldb:i0),ldb,C+i0,ldc); }}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_GLOBAL); if(!h){printf("%s\n",dlerror());return 1;}
  G=(sgemm_t)dlsym(h,argv[2]);
  void (*setth)(int)=(void(*)(int))dlsym(h,argc>3?argv[3]:"scipy_openblas_set_num_threads"); if(setth)setth(1);
  int shapes[][5]={{0,0,100,50,784},{1,0,784,50,100},{0,1,100,784,50},{0,0,32,100,784},{1,0,784,100,32},
                   {0,0,128,512,784},{0,0,128,512,512},{1,0,784,512,128},{0,1,128,512,512},
                   {0,0,256,1024,784},{1,0,784,1024,256},{0,1,256,1024,1024}};
  int ns=sizeof shapes/sizeof shapes[0]; int nbs[]={2,3,4,6,8,16};
  for(int s=0;s<ns;s++){int ta=shapes[s][0],tb=shapes[s][1],M=shapes[s][2],N=shapes[s][3],K=shapes[s][4];
    float*A=malloc(4L*M*K),*B=malloc(4L*K*N),*C=malloc(4L*M*N);
    for(long i=0;i<(long)M*K;i++)A[i]=(i%7)*0.1f; for(long i=0;i<(long)K*N;i++)B[i]=(i%5)*0.1f;
    int lda=ta?M:K, ldb=tb?K:N; double madd=(double)M*N*K;
    int reps=(int)(3e7/madd)+1;
    printf("%c%c %4dx%4dx%4d %6.1fM:", ta?'T':'N', tb?'T':'N', M,N,K, madd/1e6);
    for(int q=0;q<6;q++){ int nb=nbs[q]; double r[41];
      for(int it=0;it<41;it++){ double t0=now(); for(int i=0;i<reps;i++) rm(ta,tb,M,N,K,A,lda,B,ldb,C,N); double t1=now();
        for(int i=0;i<reps;i++) split(ta,tb,M,N,K,A,lda,B,ldb,C,N,nb); double t2=now(); r[it]=(t2-t1)/(t1-t0);}
      qsort(r,41,sizeof(double),cmp); printf(" nb%d %.3f", nb, r[20]); }
    printf("\n"); free(A);free(B);free(C);}
}
