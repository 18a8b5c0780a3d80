;;; test-ob-chat-ai-files.el --- ERT tests for files in chat-ai blocks  -*- lexical-binding: t; -*-

;;; Commentary:

;; Real blocks linking images, PDFs and text files, run through the real
;; helper against the loopback server; the tests check the content parts
;; the server received.  Load after tests/test-ob-chat-ai.el.

;;; Code:

(require 'ert)
(require 'cl-lib)
(unless (featurep 'test-ob-chat-ai)
  (load (expand-file-name "test-ob-chat-ai.el"
                          (file-name-directory (or load-file-name buffer-file-name)))
        nil t))

(defconst ob-chat-ai-test-png
  (concat (unibyte-string #x89) "PNG\r\n" (unibyte-string #x1a) "\n"
          (apply #'unibyte-string (number-sequence 0 255)))
  "The bytes of a small PNG file, every byte value included.")

(defconst ob-chat-ai-test-pdf "%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n"
  "The bytes of a small PDF file.")

(defmacro ob-chat-ai-test-in-folder (&rest body)
  "Run BODY with `default-directory' a new folder, deleted afterwards."
  (declare (indent 0) (debug t))
  `(let ((default-directory (file-name-as-directory
                             (make-temp-file "chat-ai-files" t))))
     (unwind-protect (progn ,@body)
       (delete-directory default-directory t))))

(defun ob-chat-ai-test-write (name bytes)
  "Write BYTES to the file NAME, exactly."
  (let ((coding-system-for-write 'no-conversion))
    (with-temp-file name
      (set-buffer-multibyte nil)
      (insert bytes))))

(defun ob-chat-ai-test-data-url (mime bytes)
  "Return BYTES as a data: URL of type MIME."
  (concat "data:" mime ";base64," (base64-encode-string bytes t)))

(defun ob-chat-ai-test-run-org-file (name text)
  "Write TEXT to the Org file NAME, run its first block, and return its result."
  (with-temp-file name (insert text))
  (let ((buffer (find-file-noselect name)))
    (unwind-protect
        (with-current-buffer buffer
          (ob-chat-ai-test-run))
      (with-current-buffer buffer (set-buffer-modified-p nil))
      (kill-buffer buffer))))

(ert-deftest ob-chat-ai-test-files-links-become-content-parts ()
  (ob-chat-ai-test-in-folder
    (make-directory "pics")
    (ob-chat-ai-test-write "pics/diagram.png" ob-chat-ai-test-png)
    (ob-chat-ai-test-write "paper.pdf" ob-chat-ai-test-pdf)
    (ob-chat-ai-test-with-org ""
      (ob-chat-ai-test-run-org-file
       "notes.org"
       "#+begin_src chat-ai :model m :detail low
What does [[file:pics/diagram.png]] show, next to
[[https://example.com/x.png][this one]]? See [[./paper.pdf]] and [[https://orgmode.org]].
#+end_src
")
      (should
       (equal
        (ob-chat-ai-test-messages-sent)
        `(("user"
           [((type . "text") (text . "What does"))
            ((type . "image_url")
             (image_url (url . ,(ob-chat-ai-test-data-url "image/png"
                                                          ob-chat-ai-test-png))
                        (detail . "low")))
            ((type . "text") (text . "show, next to"))
            ((type . "image_url")
             (image_url (url . "https://example.com/x.png") (detail . "low")))
            ((type . "text") (text . "? See"))
            ((type . "file")
             (file (filename . "paper.pdf")
                   (file_data . ,(ob-chat-ai-test-data-url "application/pdf"
                                                           ob-chat-ai-test-pdf))))
            ((type . "text") (text . "and [[https://orgmode.org]]."))])))))))

(ert-deftest ob-chat-ai-test-files-header-args-image-and-file ()
  (ob-chat-ai-test-in-folder
    (make-directory "in")
    (ob-chat-ai-test-write "in/a.png" ob-chat-ai-test-png)
    (with-temp-file "in/notes.txt" (insert "line one\n"))
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :model m :dir in :image a.png :file notes.txt
Compare.
#+end_src
"
      (ob-chat-ai-test-run)
      (should
       (equal
        (ob-chat-ai-test-messages-sent)
        `(("user"
           [((type . "text") (text . "Compare."))
            ((type . "image_url")
             (image_url (url . ,(ob-chat-ai-test-data-url "image/png"
                                                          ob-chat-ai-test-png))))
            ((type . "text") (text . "notes.txt:\n```txt\nline one\n```"))])))))))

(ert-deftest ob-chat-ai-test-files-results-file-keeps-file-as-the-output ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :model m :results file :file reply.txt
Say hello.
#+end_src
"
      (should (equal (file-name-nondirectory (ob-chat-ai-test-run)) "reply.txt"))
      (should (equal (ob-chat-ai-test-messages-sent) '(("user" "Say hello."))))
      (should (equal (with-temp-buffer (insert-file-contents "reply.txt")
                                       (buffer-string))
                     "Say hello.")))))

(ert-deftest ob-chat-ai-test-files-a-missing-file-is-refused-naming-it ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :model m
Look at [[file:gone.png]].
#+end_src
"
      (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                     (format "chat-ai: %sgone.png: no such file"
                             default-directory)))
      (should-not (ob-chat-ai-test-received)))))

(ert-deftest ob-chat-ai-test-files-a-bad-detail-is-refused ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :detail huge
hi
#+end_src
"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :detail must be auto, low or high, not huge"))))

(ert-deftest ob-chat-ai-test-files-a-session-keeps-earlier-images ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-write "a.png" ob-chat-ai-test-png)
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :model m :session s
What is [[file:a.png]]?
#+end_src

#+RESULTS:
: A test pattern.

#+begin_src chat-ai :model m :session s
And its colours?
#+end_src
"
      (ob-chat-ai-test-run-last)
      (should
       (equal
        (ob-chat-ai-test-messages-sent)
        `(("user"
           [((type . "text") (text . "What is"))
            ((type . "image_url")
             (image_url (url . ,(ob-chat-ai-test-data-url "image/png"
                                                          ob-chat-ai-test-png))))
            ((type . "text") (text . "?"))])
          ("assistant" "A test pattern.")
          ("user" "And its colours?")))))))

;; Before: only links in earlier bodies were sent again; an earlier
;; block's :image and :file header args were lost from the history.
(ert-deftest ob-chat-ai-test-files-a-session-keeps-earlier-header-arg-files ()
  (ob-chat-ai-test-in-folder
    (make-directory "in")
    (ob-chat-ai-test-write "in/x.png" ob-chat-ai-test-png)
    (with-temp-file "notes.txt" (insert "line one\n"))
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :model m :session s :dir in :image x.png :detail high
What is this?
#+end_src

#+RESULTS:
: A test pattern.

#+begin_src chat-ai :model m :session s :file notes.txt
And these notes?
#+end_src
"
      (ob-chat-ai-test-run-last)
      (should
       (equal
        (ob-chat-ai-test-messages-sent)
        `(("user"
           [((type . "text") (text . "What is this?"))
            ((type . "image_url")
             (image_url (url . ,(ob-chat-ai-test-data-url "image/png"
                                                          ob-chat-ai-test-png))
                        (detail . "high")))])
          ("assistant" "A test pattern.")
          ("user"
           [((type . "text") (text . "And these notes?"))
            ((type . "text") (text . "notes.txt:\n```txt\nline one\n```"))])))))))

;;;; The legacy completions endpoint

(defun ob-chat-ai-test-sorted (object)
  "Return the fields of JSON OBJECT sorted by name."
  (sort (copy-sequence object) (lambda (a b) (string< (car a) (car b)))))

(ert-deftest ob-chat-ai-test-completions-endpoint-streamed-and-not ()
  (dolist (stream '("yes" "no"))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :endpoint completions :model m :stream %s \
:suffix \" The end.\" :echo no :max-tokens 50 :temperature 0.5 :stop \"###\"
Once upon a time
#+end_src
" stream)
      (should (equal (ob-chat-ai-test-run) "Once upon a time The end."))
      (let ((request (car (ob-chat-ai-test-received 1))))
        (should (equal (alist-get 'path request) "/v1/completions"))
        (should (equal (ob-chat-ai-test-sorted (alist-get 'body request))
                       `((echo . :false) (max_tokens . 50) (model . "m")
                         (prompt . "Once upon a time") (stop . "###")
                         (stream . ,(if (equal stream "yes") t :false))
                         ,@(and (equal stream "yes")
                                '((stream_options (include_usage . t))))
                         (suffix . " The end.") (temperature . 0.5))))))))

(ert-deftest ob-chat-ai-test-completions-endpoint-refuses-chat-only-args ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :endpoint completions :system \"Be brief.\"
hi
#+end_src
"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :system is for the chat endpoint, not completions")))
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :endpoint edits
hi
#+end_src
"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :endpoint must be chat, completions or images, not edits"))))

;;;; Images out

(defun ob-chat-ai-test-image-bytes (name)
  "Return the bytes of the image the loopback server makes under NAME."
  (concat (unibyte-string #x89) "PNG\r\n" (unibyte-string #x1a) "\n" name
          (apply #'unibyte-string (number-sequence 0 255))))

(defun ob-chat-ai-test-file-bytes (file)
  "Return the bytes of FILE."
  (with-temp-buffer
    (set-buffer-multibyte nil)
    (let ((coding-system-for-read 'no-conversion))
      (insert-file-contents-literally file))
    (buffer-string)))

(defun ob-chat-ai-test-result-text ()
  "Return the text of the result of the first block, as it is in the buffer."
  (goto-char (point-min))
  (re-search-forward "^#\\+begin_src")
  (goto-char (org-babel-where-is-src-block-result))
  (forward-line)
  (buffer-substring-no-properties (point) (org-babel-result-end)))

(ert-deftest ob-chat-ai-test-images-b64-written-and-linked ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :endpoint images :model gpt-image-1 :file out/cat.png \
:n 2 :size 1024x1024 :quality high :background transparent :output-format png
A cat in the style of Hokusai
#+end_src
"
      (ob-chat-ai-test-run)
      (should (equal (ob-chat-ai-test-result-text)
                     ":results:\n[[file:out/cat.png]]\n[[file:out/cat-2.png]]\n:end:\n"))
      (should (equal (ob-chat-ai-test-file-bytes "out/cat.png")
                     (ob-chat-ai-test-image-bytes "gpt-image-1-1.png")))
      (should (equal (ob-chat-ai-test-file-bytes "out/cat-2.png")
                     (ob-chat-ai-test-image-bytes "gpt-image-1-2.png")))
      (let ((request (car (ob-chat-ai-test-received 1))))
        (should (equal (alist-get 'path request) "/v1/images/generations"))
        (should (equal (ob-chat-ai-test-sorted (alist-get 'body request))
                       '((background . "transparent") (model . "gpt-image-1")
                         (n . 2) (output_format . "png")
                         (prompt . "A cat in the style of Hokusai")
                         (quality . "high") (size . "1024x1024")))))
      ;; Run again: the drawer is replaced, not added to.
      (ob-chat-ai-test-run)
      (should (equal (ob-chat-ai-test-result-text)
                     ":results:\n[[file:out/cat.png]]\n[[file:out/cat-2.png]]\n:end:\n")))))

(ert-deftest ob-chat-ai-test-images-url-reply-downloaded-under-a-named-folder ()
  (ob-chat-ai-test-in-folder
    (with-temp-file "doc.org"
      (insert "#+name: harbour
#+begin_src chat-ai :endpoint images :model url
A harbour at dawn
#+end_src
"))
    (ob-chat-ai-test-with-org ""
      (let ((buffer (find-file-noselect "doc.org"))
            (redisplays 0))
        (unwind-protect
            (with-current-buffer buffer
              ;; Batch Emacs shows no images: stand in for a buffer that does,
              ;; and count the redisplays asked for.
              (set (if (boundp 'org-link-preview-overlays)
                       (make-local-variable 'org-link-preview-overlays)
                     (make-local-variable 'org-inline-image-overlays))
                   (list (make-overlay (point-min) (point-min))))
              (let ((refresh (if (fboundp 'org-link-preview-refresh)
                                 'org-link-preview-refresh
                               'org-redisplay-inline-images)))
                (advice-add refresh :override (lambda () (cl-incf redisplays))
                            '((name . ob-chat-ai-test-count)))
                (unwind-protect (ob-chat-ai-test-run)
                  (advice-remove refresh 'ob-chat-ai-test-count)))
              (should (equal (ob-chat-ai-test-result-text)
                             ":results:\n[[file:doc-images/harbour.png]]\n:end:\n"))
              (should (equal (ob-chat-ai-test-file-bytes "doc-images/harbour.png")
                             (ob-chat-ai-test-image-bytes "url-1.png")))
              (should (= redisplays 1)))
          (with-current-buffer buffer (set-buffer-modified-p nil))
          (kill-buffer buffer))))))

(ert-deftest ob-chat-ai-test-images-edit-sends-the-image-and-mask ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-write "in.png" ob-chat-ai-test-png)
    (ob-chat-ai-test-write "mask.png" ob-chat-ai-test-png)
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :endpoint images :model gpt-image-1 :mask mask.png :file edited.png
Give [[file:in.png]] a hat.
#+end_src
"
      (ob-chat-ai-test-run)
      (should (file-exists-p "edited.png"))
      (let* ((request (car (ob-chat-ai-test-received 1)))
             (form (alist-get 'form request)))
        (should (equal (alist-get 'path request) "/v1/images/edits"))
        (should (equal (alist-get 'prompt form) "Give a hat."))
        (should (equal (alist-get 'b64 (aref (alist-get 'image form) 0))
                       (base64-encode-string ob-chat-ai-test-png t)))
        (should (equal (alist-get 'filename (aref (alist-get 'mask form) 0))
                       "mask.png"))))))

(ert-deftest ob-chat-ai-test-images-edit-of-a-remote-image-is-refused-in-one-line ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-write "mask.png" ob-chat-ai-test-png)
    (dolist (block '("#+begin_src chat-ai :endpoint images :image https://example.com/cat.png
Add a hat.
#+end_src
"
                     "#+begin_src chat-ai :endpoint images :file hat.png
Give [[https://example.com/cat.png][the cat]] a hat.
#+end_src
"))
      (ob-chat-ai-test-with-org block
        (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                       "chat-ai: https://example.com/cat.png: the images endpoint \
edits local files, not URLs; download the image and give its path"))
        (should (string-suffix-p "#+end_src\n" (buffer-string)))
        (should-not (ob-chat-ai-test-received))
        (should-not (file-exists-p "hat.png"))))))

(ert-deftest ob-chat-ai-test-images-in-the-background-are-linked-too ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :endpoint images :model gpt-image-1 :file cat.png
a cat
#+end_src
"
      (let ((ob-chat-ai-async 'always))
        (ob-chat-ai-test-run)
        (ob-chat-ai-test-wait-for "[[file:cat.png]]")
        (should (equal (ob-chat-ai-test-result-text)
                       ":results:\n[[file:cat.png]]\n:end:\n"))
        (should (file-exists-p "cat.png"))))))

(ert-deftest ob-chat-ai-test-images-dry-run-shows-the-request-and-the-file ()
  (ob-chat-ai-test-in-folder
    (ob-chat-ai-test-with-org
        "#+begin_src chat-ai :endpoint images :file cat.png :dry-run yes
a cat
#+end_src
"
      (let ((preview (json-parse-string (ob-chat-ai-test-run) :object-type 'alist)))
        (should (string-suffix-p "/images/generations" (alist-get 'url preview)))
        (should (equal (alist-get 'output preview)
                       (expand-file-name "cat.png")))
        (should (equal (alist-get 'body preview)
                       '((model . "gpt-image-1") (prompt . "a cat")))))
      (should-not (ob-chat-ai-test-received)))))

(ert-deftest ob-chat-ai-test-images-results-file-is-refused ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :endpoint images :results file :file x.png
a cat
#+end_src
"
    (should (string-prefix-p
             "chat-ai: :endpoint images writes and links the files itself"
             (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))))

(provide 'test-ob-chat-ai-files)

;;; test-ob-chat-ai-files.el ends here
