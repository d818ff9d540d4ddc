// samples/Chat — talk to a ChatGLM checkpoint (HF folder: config.json + weights + ice_text.model) from the console.
// All the logic lives in ChatApp so that tests can run it in-process.
using System.Text;
using DoctorGlm.Samples.Chat;

Console.OutputEncoding = Encoding.UTF8;
Console.InputEncoding = Encoding.UTF8;
return await ChatApp.RunAsync(args, Console.Out, Console.In);
